// SPDX-License-Identifier: GPL-2.0-or-later
#include "stream_model.h"

#include "byte_io.h"
#include "codec.h"
#include "fuzz_base.h"
#include "prefix_list.h"
#include "stream_walker.h"

namespace handoff_fuzz {
namespace {

using handoff::FrameHeader;
using handoff::kFrameFlagPrefix;
using handoff::kFrameHeaderSize;

// Codec contexts cost more to create than a small frame costs to code:
// one of each for the process (fuzz targets run on one thread).
handoff::Compressor& SharedCompressor() {
  static auto* c = new handoff::Compressor;
  return *c;
}
handoff::Decompressor& SharedDecompressor() {
  static auto* d = new handoff::Decompressor;
  return *d;
}

// The prefix a PREFIX frame's list names: its base chunks, concatenated
// (zeros for a chunk beyond the base, which a mutator may have listed:
// the decoder refuses that list before it looks for the prefix).
std::string GatherPrefix(const std::vector<uint64_t>& chunks) {
  std::string prefix;
  for (uint64_t g : chunks) {
    const uint8_t* chunk = BaseChunk(g);
    if (chunk != nullptr)
      prefix.append(reinterpret_cast<const char*>(chunk), HANDOFF_CHUNK_SIZE);
    else
      prefix.append(HANDOFF_CHUNK_SIZE, '\0');
  }
  return prefix;
}

void Decode(ModelFrame* f) {
  const FrameHeader& h = f->header;
  handoff::ByteReader r(reinterpret_cast<const uint8_t*>(f->payload.data()),
                        f->payload.size());
  std::string prefix;
  if (h.flags & kFrameFlagPrefix) {
    if (h.codec != HANDOFF_CODEC_ZSTD ||
        !handoff::ReadPrefixList(&r, BaseChunkCount(), &f->prefix).ok())
      return;
    prefix = GatherPrefix(f->prefix);
  }
  f->plain.resize(h.plain_length);
  handoff::Status s = SharedDecompressor().Decompress(
      h.codec, reinterpret_cast<const uint8_t*>(f->payload.data()) + r.pos(),
      r.remaining(), reinterpret_cast<const uint8_t*>(prefix.data()),
      prefix.size(), reinterpret_cast<uint8_t*>(f->plain.data()),
      h.plain_length);
  f->decoded = s.ok();
  if (!f->decoded) f->plain.clear();
}

uint32_t CountRecords(const uint8_t* plain, size_t len) {
  handoff::RecordIterator records(plain, len);
  handoff::Record rec;
  uint32_t n = 0;
  while (records.Next(&rec)) n++;
  return n;
}

// Compresses a changed plaintext again, as its header says; stored when
// the codec refuses (a level the mutator made up, a prefix list on
// another codec).
void Encode(ModelFrame* f) {
  FrameHeader& h = f->header;
  const bool with_prefix = (h.flags & kFrameFlagPrefix) &&
                           h.codec == HANDOFF_CODEC_ZSTD && !f->prefix.empty();
  std::string payload, prefix;
  if (with_prefix) {
    handoff::AppendPrefixList(f->prefix, &payload);
    prefix = GatherPrefix(f->prefix);
  }
  const uint8_t* out = nullptr;
  size_t out_len = 0;
  handoff::Status s = SharedCompressor().Compress(
      static_cast<HandoffCodec>(h.codec), h.level,
      reinterpret_cast<const uint8_t*>(f->plain.data()), f->plain.size(),
      reinterpret_cast<const uint8_t*>(prefix.data()), prefix.size(), &out,
      &out_len);
  if (s.ok()) {
    payload.append(reinterpret_cast<const char*>(out), out_len);
  } else {
    h.codec = HANDOFF_CODEC_NONE;
    h.level = 0;
    h.flags &= static_cast<uint16_t>(~kFrameFlagPrefix);
    payload = f->plain;
  }
  f->payload = std::move(payload);
  h.record_count =
      CountRecords(reinterpret_cast<const uint8_t*>(f->plain.data()),
                   f->plain.size());
}

}  // namespace

bool ParseStream(const uint8_t* data, size_t size, bool decode,
                 StreamModel* out) {
  *out = StreamModel();
  handoff::StreamWalker walker(data, size);
  handoff::StreamHeader header;
  size_t needed = 0;
  if (!walker.ReadHeader(&header, &needed).ok()) return false;
  out->header.assign(reinterpret_cast<const char*>(data), walker.header_size());
  size_t pos = walker.header_size();
  for (handoff::StreamPart part; walker.Next(&part).ok();) {
    pos = part.offset + part.size;
    if (part.is_end) {
      out->has_end = true;
      break;
    }
    ModelFrame f;
    f.header = part.frame;
    f.payload.assign(
        reinterpret_cast<const char*>(data) + part.offset + kFrameHeaderSize,
        part.frame.payload_length);
    if (decode) Decode(&f);
    out->frames.push_back(std::move(f));
  }
  out->tail.assign(reinterpret_cast<const char*>(data) + pos, size - pos);
  return true;
}

std::string SerializeStream(StreamModel* m) {
  std::string out = m->header;
  handoff::EndRecord end;
  for (ModelFrame& f : m->frames) {
    if (f.decoded) {
      if (f.dirty) Encode(&f);
      f.dirty = false;
      f.header.plain_length = static_cast<uint32_t>(f.plain.size());
      f.header.plain_checksum = handoff::Checksum64(f.plain.data(), f.plain.size());
      handoff::RecordIterator records(
          reinterpret_cast<const uint8_t*>(f.plain.data()), f.plain.size());
      for (handoff::Record rec; records.Next(&rec);) {
        end.per_kind[rec.kind]++;
        end.record_count++;
      }
    }
    end.plain_bytes += f.header.plain_length;
    f.header.payload_length = static_cast<uint32_t>(f.payload.size());
    uint8_t h[kFrameHeaderSize];
    handoff::SerializeFrameHeader(f.header, h);
    out.append(reinterpret_cast<const char*>(h), sizeof(h));
    out += f.payload;
    end.frame_count++;
  }
  if (m->has_end) {
    const size_t at = out.size();
    out += handoff::SerializeEndRecord(end);
    handoff::ResealEndRecord(reinterpret_cast<uint8_t*>(out.data()), at);
  }
  out += m->tail;
  return out;
}

std::vector<handoff::Record> ParseRecords(const std::string& plain,
                                          size_t* rest_at) {
  std::vector<handoff::Record> recs;
  handoff::RecordIterator it(reinterpret_cast<const uint8_t*>(plain.data()),
                             plain.size());
  size_t end = 0;
  for (handoff::Record rec; it.Next(&rec);) {
    end = rec.offset + handoff::kRecordHeaderSize +
          handoff::RecordBodySize(rec.kind, rec.flags);
    recs.push_back(rec);
  }
  *rest_at = it.status().ok() ? plain.size() : end;
  return recs;
}

void RepairStream(uint8_t* d, size_t size) {
  using namespace handoff;
  if (size < kStreamHeaderPrefix) return;
  const size_t h = DeclaredHeaderLength(d);
  if (h < kMinHeaderLength || h > size) return;
  ResealStreamHeader(d, h);
  size_t pos = h;
  while (size - pos >= 4) {
    const uint32_t tag = LoadLe<uint32_t>(d + pos);
    if (tag == kEndTag && size - pos >= kEndRecordSize) {
      ResealEndRecord(d, pos);
      return;
    }
    if (tag != kFrameTag || size - pos < kFrameHeaderSize) return;
    FrameHeader f = ReadFrameHeaderUnchecked(d + pos);
    if (f.payload_length > size - pos - kFrameHeaderSize) return;
    const uint8_t* payload = d + pos + kFrameHeaderSize;
    if (f.codec == HANDOFF_CODEC_NONE && f.flags == 0) {
      f.plain_length = f.payload_length;
      f.plain_checksum = Checksum64(payload, f.payload_length);
      f.record_count = CountRecords(payload, f.payload_length);
    }
    SerializeFrameHeader(f, d + pos);
    pos += kFrameHeaderSize + f.payload_length;
  }
}

}  // namespace handoff_fuzz
