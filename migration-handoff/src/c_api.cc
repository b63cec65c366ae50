// SPDX-License-Identifier: GPL-2.0-or-later
//
// The extern "C" boundary: converts arguments, catches everything, turns
// Status into a code plus a thread-local message. Nothing below may throw
// into QEMU.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "base.h"
#include "compression_policy.h"
#include "decoder.h"
#include "encoder.h"
#include "handoff.h"
#include "mode.h"
#include "order_file.h"
#include "remaining.h"
#include "segment_table.h"
#include "segment_writer.h"
#include "sized_struct.h"
#include "stream_walker.h"

struct HandoffBase {
  std::unique_ptr<handoff::Base> base;
};
// Exactly one of encoder (stream version 2) and segments (version 3).
struct HandoffEncoder {
  std::unique_ptr<handoff::Encoder> encoder;
  std::unique_ptr<handoff::SegmentWriter> segments;
  std::string log;
};
struct HandoffSegmentTable {
  handoff::SegmentTable table;
};
struct HandoffDecoder {
  std::unique_ptr<handoff::Decoder> decoder;
};

namespace handoff {
namespace {

thread_local std::string g_last_error;

int Report(const Status& s) {
  if (s.ok()) return HANDOFF_OK;
  try {
    g_last_error = std::string(handoff_error_name(s.code())) + ": " + s.message();
  } catch (...) {
  }
  return s.code();
}

template <typename F>
int Guard(F&& f) noexcept {
  try {
    return Report(f());
  } catch (const std::bad_alloc&) {
    return Report(Status(HANDOFF_E_NO_MEMORY, "out of memory"));
  } catch (const std::exception& e) {
    return Report(Status(HANDOFF_E_INTERNAL, e.what()));
  } catch (...) {
    return Report(Status(HANDOFF_E_INTERNAL, "unknown exception"));
  }
}

Status Invalid(const char* what) {
  return Status(HANDOFF_E_INVALID_ARGUMENT, what);
}

class MemorySink : public ChunkSink {
 public:
  MemorySink(const Geometry& g, void* const* memory) {
    for (size_t i = 0; i < g.region_count(); i++)
      regions_.push_back(static_cast<uint8_t*>(memory[i]));
  }
  Status Write(uint32_t region, uint64_t index, const uint8_t* data) override {
    std::memcpy(regions_[region] + (index << kChunkShift), data, kChunkSize);
    return Status::Ok();
  }
  Status Read(uint32_t region, uint64_t index, uint8_t* data) override {
    std::memcpy(data, regions_[region] + (index << kChunkShift), kChunkSize);
    return Status::Ok();
  }
  Status WriteZeros(uint32_t region, uint64_t index, uint64_t count) override {
    std::memset(regions_[region] + (index << kChunkShift), 0, count << kChunkShift);
    return Status::Ok();
  }

 private:
  std::vector<uint8_t*> regions_;
};

class CallbackSink : public ChunkSink {
 public:
  explicit CallbackSink(const HandoffWriter& w) : w_(w) {}
  Status Write(uint32_t region, uint64_t index, const uint8_t* data) override {
    if (w_.write_chunk(w_.opaque, region, index, data) != 0)
      return Status(HANDOFF_E_WRITE, "writer failed on chunk " +
                                         std::to_string(index) + " of region " +
                                         std::to_string(region));
    return Status::Ok();
  }
  Status Read(uint32_t region, uint64_t index, uint8_t* data) override {
    if (w_.read_chunk == nullptr)
      return Status(HANDOFF_E_WRITE, "self reference needs a read_chunk callback");
    if (w_.read_chunk(w_.opaque, region, index, data) != 0)
      return Status(HANDOFF_E_WRITE, "reader failed on chunk " +
                                         std::to_string(index) + " of region " +
                                         std::to_string(region));
    return Status::Ok();
  }
  Status WriteZeros(uint32_t region, uint64_t index, uint64_t count) override {
    if (w_.zero_chunks == nullptr) return ChunkSink::WriteZeros(region, index, count);
    if (w_.zero_chunks(w_.opaque, region, index, count) != 0)
      return Status(HANDOFF_E_WRITE, "writer failed to zero " +
                                         std::to_string(count) +
                                         " chunks from " + std::to_string(index) +
                                         " of region " + std::to_string(region));
    return Status::Ok();
  }

 private:
  HandoffWriter w_;
};

}  // namespace
}  // namespace handoff

using handoff::Guard;
using handoff::Invalid;
using handoff::Status;

extern "C" {

const char* handoff_error_name(int code) noexcept {
  switch (code) {
#define NAME(c) \
  case c:       \
    return #c;
    NAME(HANDOFF_OK)
    NAME(HANDOFF_E_INVALID_ARGUMENT)
    NAME(HANDOFF_E_NO_MEMORY)
    NAME(HANDOFF_E_IO)
    NAME(HANDOFF_E_INTERNAL)
    NAME(HANDOFF_E_STATE)
    NAME(HANDOFF_E_BAD_MAGIC)
    NAME(HANDOFF_E_UNSUPPORTED_VERSION)
    NAME(HANDOFF_E_HEADER_CORRUPT)
    NAME(HANDOFF_E_BAD_GEOMETRY)
    NAME(HANDOFF_E_WRONG_BASE)
    NAME(HANDOFF_E_GEOMETRY_MISMATCH)
    NAME(HANDOFF_E_BAD_FRAME_TAG)
    NAME(HANDOFF_E_FRAME_HEADER_CORRUPT)
    NAME(HANDOFF_E_UNKNOWN_CODEC)
    NAME(HANDOFF_E_BAD_LEVEL)
    NAME(HANDOFF_E_LENGTH_LIMIT)
    NAME(HANDOFF_E_DECOMPRESS)
    NAME(HANDOFF_E_SIZE_MISMATCH)
    NAME(HANDOFF_E_CHECKSUM)
    NAME(HANDOFF_E_BAD_RECORD)
    NAME(HANDOFF_E_CHUNK_RANGE)
    NAME(HANDOFF_E_BAD_BASE_REF)
    NAME(HANDOFF_E_BAD_SELF_REF)
    NAME(HANDOFF_E_FRAME_SEQUENCE)
    NAME(HANDOFF_E_END_MISMATCH)
    NAME(HANDOFF_E_DIGEST)
    NAME(HANDOFF_E_TRUNCATED)
    NAME(HANDOFF_E_TRAILING_DATA)
    NAME(HANDOFF_E_WRITE)
    NAME(HANDOFF_E_BASE_CHANGED)
    NAME(HANDOFF_E_INDEX_CORRUPT)
    NAME(HANDOFF_E_DUPLICATE_CHUNK)
    NAME(HANDOFF_E_SEGMENT_DIGEST)
    NAME(HANDOFF_E_SEGMENT_DUPLICATE)
    NAME(HANDOFF_E_SEGMENT_DEPENDENCY)
    NAME(HANDOFF_E_BAD_SEGMENT)
    NAME(HANDOFF_E_ROOT_MISMATCH)
#undef NAME
    default:
      return "HANDOFF_E_UNKNOWN";
  }
}

const char* handoff_last_error_message(void) noexcept {
  return handoff::g_last_error.c_str();
}

int handoff_base_create(const HandoffRegionSpec* regions, size_t count,
                        const char* index_path, HandoffBase** out) noexcept {
  return Guard([&]() -> Status {
    if (out == nullptr || (regions == nullptr && count != 0))
      return Invalid("null regions or out");
    *out = nullptr;
    std::vector<handoff::RegionSource> sources;
    for (size_t i = 0; i < count; i++) {
      handoff::RegionSource s;
      if (regions[i].name == nullptr) return Invalid("region without a name");
      s.region.name = regions[i].name;
      if (static_cast<unsigned>(regions[i].kind) > HANDOFF_REGION_DISK)
        return Invalid("region kind is neither memory nor disk");
      s.region.kind = regions[i].kind;
      s.region.size = regions[i].size;
      if (regions[i].path != nullptr) s.path = regions[i].path;
      s.data = static_cast<const uint8_t*>(regions[i].data);
      sources.push_back(std::move(s));
    }
    auto h = std::make_unique<HandoffBase>();
    HANDOFF_RETURN_IF_ERROR(handoff::Base::Create(
        sources, index_path ? index_path : "", &h->base));
    *out = h.release();
    return Status::Ok();
  });
}

int handoff_base_open(const char* index_path, HandoffBase** out) noexcept {
  return Guard([&]() -> Status {
    if (out == nullptr || index_path == nullptr) return Invalid("null argument");
    *out = nullptr;
    auto h = std::make_unique<HandoffBase>();
    HANDOFF_RETURN_IF_ERROR(handoff::Base::Open(index_path, &h->base));
    *out = h.release();
    return Status::Ok();
  });
}

int handoff_base_extend(const HandoffBase* base, const HandoffRegionSpec* extra,
                        size_t count, HandoffBase** out) noexcept {
  return Guard([&]() -> Status {
    if (base == nullptr || extra == nullptr || out == nullptr)
      return Invalid("null argument");
    *out = nullptr;
    std::vector<handoff::Region> regions;
    for (size_t i = 0; i < count; i++) {
      const HandoffRegionSpec& s = extra[i];
      if (s.name == nullptr || s.path != nullptr || s.data != nullptr)
        return Invalid("an extra region has a name, and no path or data");
      handoff::Region r;
      r.name = s.name;
      r.kind = s.kind;
      r.size = s.size;
      regions.push_back(r);
    }
    auto h = std::make_unique<HandoffBase>();
    HANDOFF_RETURN_IF_ERROR(handoff::Base::Extend(base->base.get(), regions, &h->base));
    *out = h.release();
    return Status::Ok();
  });
}

int handoff_base_verify(const HandoffBase* base) noexcept {
  return Guard([&]() -> Status {
    if (base == nullptr) return Invalid("null base");
    return base->base->Verify();
  });
}

void handoff_base_free(HandoffBase* base) noexcept { delete base; }

int handoff_order_file_read(const HandoffBase* base, const char* path,
                            HandoffChunkRef** refs, size_t* count) noexcept {
  return Guard([&]() -> Status {
    if (base == nullptr || path == nullptr || refs == nullptr ||
        count == nullptr)
      return Invalid("null argument");
    *refs = nullptr;
    *count = 0;
    std::vector<HandoffChunkRef> order;
    HANDOFF_RETURN_IF_ERROR(
        handoff::ReadOrderFile(path, base->base->geometry(), &order));
    if (order.empty()) return Status::Ok();
    // malloc'd: a C caller owns it, freed by handoff_chunk_refs_free.
    auto* out = static_cast<HandoffChunkRef*>(
        std::malloc(order.size() * sizeof(HandoffChunkRef)));
    if (out == nullptr) throw std::bad_alloc();
    std::memcpy(out, order.data(), order.size() * sizeof(HandoffChunkRef));
    *refs = out;
    *count = order.size();
    return Status::Ok();
  });
}

void handoff_chunk_refs_free(HandoffChunkRef* refs) noexcept {
  std::free(refs);
}

size_t handoff_base_region_count(const HandoffBase* base) noexcept {
  return base ? base->base->geometry().region_count() : 0;
}

int handoff_base_region_info(const HandoffBase* base, size_t index,
                             HandoffRegionInfo* info) noexcept {
  return Guard([&]() -> Status {
    if (base == nullptr || info == nullptr ||
        index >= base->base->geometry().region_count())
      return Invalid("bad base, index or info");
    const handoff::Region& r = base->base->geometry().regions()[index];
    info->name = r.name.c_str();
    info->kind = r.kind;
    info->size = r.size;
    return Status::Ok();
  });
}

int handoff_base_id(const HandoffBase* base, uint8_t id[16]) noexcept {
  if (base == nullptr || id == nullptr) return HANDOFF_E_INVALID_ARGUMENT;
  std::memcpy(id, base->base->id(), 16);
  return HANDOFF_OK;
}

int handoff_base_read(const HandoffBase* base, size_t region, uint64_t offset,
                      void* buf, size_t len) noexcept {
  return Guard([&]() -> Status {
    if (base == nullptr || (buf == nullptr && len != 0) ||
        region >= base->base->geometry().region_count())
      return Invalid("bad base, region or buffer");
    uint64_t size = base->base->geometry().regions()[region].size;
    if (offset > size || len > size - offset)
      return Invalid("range beyond the region");
    if (len == 0) return Status::Ok();
    return base->base->Read(static_cast<uint32_t>(region), offset,
                            static_cast<uint8_t*>(buf), len);
  });
}

int handoff_base_counts(const HandoffBase* base, uint64_t* chunks,
                        uint64_t* distinct) noexcept {
  if (base == nullptr) return HANDOFF_E_INVALID_ARGUMENT;
  if (chunks) *chunks = base->base->geometry().total_chunks();
  if (distinct) *distinct = base->base->distinct();
  return HANDOFF_OK;
}

const char* handoff_base_region_file(const HandoffBase* base,
                                     size_t index) noexcept {
  if (base == nullptr || index >= base->base->geometry().region_count())
    return nullptr;
  return base->base->file_name(index).c_str();
}

const void* handoff_base_region_data(const HandoffBase* base,
                                     size_t index) noexcept {
  if (base == nullptr || index >= base->base->geometry().region_count())
    return nullptr;
  return base->base->region_data(index);
}

namespace handoff {
namespace {

HandoffEncoderConfig DefaultEncoderConfig() {
  HandoffEncoderConfig c;
  std::memset(&c, 0, sizeof(c));
  c.struct_size = sizeof(c);
  SetAdaptive(/*allow_delta=*/true, &c);
  c.seed = 0x68616e646f6666ull;  // "handoff"
  c.dedup = 1;
  return c;
}

}  // namespace
}  // namespace handoff

int handoff_encoder_config_default(HandoffEncoderConfig* config) noexcept {
  return Guard([&]() -> Status {
    if (config == nullptr) return Invalid("null config");
    return handoff::WriteSized(handoff::DefaultEncoderConfig(),
                               handoff::kEncoderConfigV1,
                               "HandoffEncoderConfig", config);
  });
}

int handoff_encoder_config_set_compression(HandoffEncoderConfig* config,
                                           const char* compression,
                                           int deltas) noexcept {
  return Guard([&]() -> Status {
    if (config == nullptr) return Invalid("null config");
    // Only fields of the first layout are written: any struct_size from
    // there on is the caller's own, and bytes past it stay untouched.
    static_assert(offsetof(HandoffEncoderConfig, allow_delta) <
                  handoff::kEncoderConfigV1);
    HANDOFF_RETURN_IF_ERROR(handoff::CheckStructSize(
        config->struct_size, handoff::kEncoderConfigV1, "HandoffEncoderConfig"));
    return handoff::SetCompression(compression, deltas, config);
  });
}

int handoff_mode_name(const HandoffMode* mode, char* buf,
                      size_t capacity) noexcept {
  int len = 0;
  int rc = Guard([&]() -> Status {
    if (mode == nullptr || buf == nullptr) return Invalid("null mode or buf");
    std::string name = handoff::ModeName(*mode);
    if (name.size() >= capacity)
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    "mode name '" + name + "' does not fit " +
                        std::to_string(capacity) + " bytes");
    std::memcpy(buf, name.c_str(), name.size() + 1);
    len = static_cast<int>(name.size());
    return Status::Ok();
  });
  return rc < 0 ? rc : len;
}

int handoff_mode_parse(const char* text, HandoffMode* mode) noexcept {
  return Guard([&]() -> Status {
    if (text == nullptr || mode == nullptr) return Invalid("null text or mode");
    return handoff::ParseMode(text, mode);
  });
}

int handoff_encoder_create(const HandoffBase* base,
                           const HandoffEncoderConfig* config,
                           HandoffEncoder** out) noexcept {
  return Guard([&]() -> Status {
    if (base == nullptr || out == nullptr) return Invalid("null base or out");
    *out = nullptr;
    HandoffEncoderConfig c = handoff::DefaultEncoderConfig();
    if (config != nullptr)
      HANDOFF_RETURN_IF_ERROR(handoff::ReadSized(
          config, handoff::kEncoderConfigV1, "HandoffEncoderConfig", &c));
    auto h = std::make_unique<HandoffEncoder>();
    if (c.segmented)
      HANDOFF_RETURN_IF_ERROR(
          handoff::SegmentWriter::Create(base->base.get(), c, &h->segments));
    else
      HANDOFF_RETURN_IF_ERROR(
          handoff::Encoder::Create(base->base.get(), c, &h->encoder));
    *out = h.release();
    return Status::Ok();
  });
}

int handoff_encoder_submit_zero_run(HandoffEncoder* enc, uint32_t region,
                                    uint64_t first_chunk,
                                    uint64_t count) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr) return Invalid("null encoder");
    if (enc->segments) return enc->segments->SubmitZeroRun(region, first_chunk, count);
    return enc->encoder->SubmitZeroRun(region, first_chunk, count);
  });
}

int handoff_encoder_begin_iteration(HandoffEncoder* enc,
                                    uint32_t iteration) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr) return Invalid("null encoder");
    if (enc->segments) return Status::Ok();  // one version: no meaning
    return enc->encoder->BeginIteration(iteration);
  });
}

int handoff_encoder_submit(HandoffEncoder* enc, uint32_t region,
                           uint64_t chunk_index, const void* data) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr || data == nullptr) return Invalid("null encoder or data");
    if (enc->segments)
      return enc->segments->Submit(region, chunk_index,
                                   static_cast<const uint8_t*>(data));
    return enc->encoder->Submit(region, chunk_index,
                                static_cast<const uint8_t*>(data));
  });
}

int handoff_encoder_submit_many(HandoffEncoder* enc, uint32_t region,
                                const void* region_data,
                                const uint64_t* indexes, size_t count,
                                int random_order) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr) return Invalid("null encoder");
    if (enc->segments)
      return enc->segments->SubmitMany(
          region, static_cast<const uint8_t*>(region_data), indexes, count);
    return enc->encoder->SubmitMany(region,
                                    static_cast<const uint8_t*>(region_data),
                                    indexes, count, random_order != 0);
  });
}

int handoff_encoder_flush(HandoffEncoder* enc) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr) return Invalid("null encoder");
    if (enc->segments) return Status::Ok();  // laid out at finish
    return enc->encoder->Flush();
  });
}

int handoff_encoder_finish(HandoffEncoder* enc) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr) return Invalid("null encoder");
    if (enc->segments) return enc->segments->Finish();
    return enc->encoder->Finish();
  });
}

int handoff_encoder_pull(HandoffEncoder* enc, void* buf, size_t capacity,
                         size_t* produced) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr || buf == nullptr || produced == nullptr)
      return Invalid("null argument");
    if (enc->segments)
      return enc->segments->Pull(static_cast<uint8_t*>(buf), capacity, produced);
    return enc->encoder->Pull(static_cast<uint8_t*>(buf), capacity, produced,
                              false);
  });
}

int handoff_encoder_pull_wait(HandoffEncoder* enc, void* buf, size_t capacity,
                              size_t* produced) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr || buf == nullptr || produced == nullptr)
      return Invalid("null argument");
    if (enc->segments)
      return enc->segments->Pull(static_cast<uint8_t*>(buf), capacity, produced);
    return enc->encoder->Pull(static_cast<uint8_t*>(buf), capacity, produced,
                              true);
  });
}

int handoff_encoder_done(const HandoffEncoder* enc) noexcept {
  if (enc == nullptr) return 0;
  return (enc->segments ? enc->segments->Done() : enc->encoder->Done()) ? 1 : 0;
}

int handoff_encoder_segment_root(const HandoffEncoder* enc,
                                 uint8_t root[HANDOFF_ROOT_SIZE]) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr || root == nullptr) return Invalid("null argument");
    if (!enc->segments)
      return Status(HANDOFF_E_STATE, "not a segmented encoder");
    return enc->segments->Root(root);
  });
}

int handoff_encoder_report_network(HandoffEncoder* enc, uint64_t bytes_sent,
                                   uint64_t now_ns) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr) return Invalid("null encoder");
    if (enc->encoder) enc->encoder->ReportNetwork(bytes_sent, 0, now_ns);
    return Status::Ok();
  });
}

int handoff_encoder_report_link(HandoffEncoder* enc, uint64_t bytes_sent,
                                uint64_t bytes_queued,
                                uint64_t now_ns) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr) return Invalid("null encoder");
    if (enc->encoder) enc->encoder->ReportNetwork(bytes_sent, bytes_queued, now_ns);
    return Status::Ok();
  });
}

int handoff_encoder_stats(const HandoffEncoder* enc,
                          HandoffEncoderStats* stats) noexcept {
  return Guard([&]() -> Status {
    if (enc == nullptr || stats == nullptr) return Invalid("null argument");
    HandoffEncoderStats full;
    std::memset(&full, 0, sizeof(full));
    if (enc->segments)
      enc->segments->Stats(&full);
    else
      enc->encoder->Stats(&full);
    return handoff::WriteSized(full, handoff::kEncoderStatsV1,
                               "HandoffEncoderStats", stats);
  });
}

uint64_t handoff_encoder_remaining_bytes(const HandoffEncoderStats* stats,
                                         uint64_t chunks_to_submit) noexcept {
  // Without readable stats nothing is known: never invite a switch-over.
  if (stats == nullptr) return UINT64_MAX;
  // Fields the caller's (older) layout lacks read as zero.
  HandoffEncoderStats full;
  std::memset(&full, 0, sizeof(full));
  try {
    if (!handoff::ReadSized(stats, handoff::kEncoderStatsV1,
                            "HandoffEncoderStats", &full).ok())
      return UINT64_MAX;
  } catch (...) {
    return UINT64_MAX;
  }
  return handoff::RemainingBytes(full, chunks_to_submit);
}

const char* handoff_encoder_decision_log(HandoffEncoder* enc) noexcept {
  if (enc == nullptr) return "";
  try {
    enc->log = enc->encoder ? enc->encoder->DecisionLog() : "";
    return enc->log.c_str();
  } catch (...) {
    return "";
  }
}

void handoff_encoder_free(HandoffEncoder* enc) noexcept {
  try {
    delete enc;
  } catch (...) {
  }
}

int handoff_decoder_create(const HandoffBase* base, const HandoffWriter* writer,
                           void* const* memory, HandoffDecoder** out) noexcept {
  return Guard([&]() -> Status {
    if (base == nullptr || out == nullptr) return Invalid("null base or out");
    *out = nullptr;
    if ((writer == nullptr) == (memory == nullptr))
      return Invalid("give exactly one of writer and memory");
    std::unique_ptr<handoff::ChunkSink> sink;
    if (writer != nullptr) {
      HandoffWriter w;
      std::memset(&w, 0, sizeof(w));
      HANDOFF_RETURN_IF_ERROR(handoff::ReadSized(writer, handoff::kWriterV1,
                                                 "HandoffWriter", &w));
      if (w.write_chunk == nullptr) return Invalid("writer without write_chunk");
      sink = std::make_unique<handoff::CallbackSink>(w);
    } else {
      for (size_t i = 0; i < base->base->geometry().region_count(); i++)
        if (memory[i] == nullptr) return Invalid("null region memory");
      sink = std::make_unique<handoff::MemorySink>(base->base->geometry(), memory);
    }
    auto h = std::make_unique<HandoffDecoder>();
    h->decoder = std::make_unique<handoff::Decoder>(base->base.get(), std::move(sink));
    *out = h.release();
    return Status::Ok();
  });
}

int handoff_decoder_feed(HandoffDecoder* dec, const void* data,
                         size_t len) noexcept {
  return Guard([&]() -> Status {
    if (dec == nullptr) return Invalid("null decoder");
    return dec->decoder->Feed(static_cast<const uint8_t*>(data), len);
  });
}

int handoff_decoder_apply_frame(HandoffDecoder* dec, const void* frame,
                                size_t len) noexcept {
  return Guard([&]() -> Status {
    if (dec == nullptr) return Invalid("null decoder");
    return dec->decoder->ApplyFrame(static_cast<const uint8_t*>(frame), len);
  });
}

int handoff_decoder_load_table(HandoffDecoder* dec, const void* table,
                               size_t len,
                               const uint8_t root[HANDOFF_ROOT_SIZE]) noexcept {
  return Guard([&]() -> Status {
    if (dec == nullptr) return Invalid("null decoder");
    // The authenticated entry point: without a root nothing would be
    // (handoff_decoder_feed is the one that reads a stream unchecked).
    if (root == nullptr) return Invalid("null root");
    return dec->decoder->LoadTable(static_cast<const uint8_t*>(table), len,
                                   root);
  });
}

int handoff_decoder_apply_segment(HandoffDecoder* dec, uint32_t number,
                                  const void* bytes, size_t len) noexcept {
  return Guard([&]() -> Status {
    if (dec == nullptr) return Invalid("null decoder");
    return dec->decoder->ApplySegment(number, static_cast<const uint8_t*>(bytes),
                                      len);
  });
}

int handoff_decoder_finish(HandoffDecoder* dec) noexcept {
  return Guard([&]() -> Status {
    if (dec == nullptr) return Invalid("null decoder");
    return dec->decoder->Finish();
  });
}

int handoff_decoder_stats(const HandoffDecoder* dec,
                          HandoffDecoderStats* stats) noexcept {
  return Guard([&]() -> Status {
    if (dec == nullptr || stats == nullptr) return Invalid("null argument");
    HandoffDecoderStats full;
    std::memset(&full, 0, sizeof(full));
    dec->decoder->Stats(&full);
    return handoff::WriteSized(full, handoff::kDecoderStatsV1,
                               "HandoffDecoderStats", stats);
  });
}

void handoff_decoder_free(HandoffDecoder* dec) noexcept { delete dec; }

int handoff_stream_split(const void* stream, size_t len, size_t* header_len,
                         size_t* offsets, size_t* lengths, size_t max_frames,
                         size_t* frame_count) noexcept {
  return Guard([&]() -> Status {
    if (stream == nullptr || header_len == nullptr || frame_count == nullptr ||
        (max_frames != 0 && (offsets == nullptr || lengths == nullptr)))
      return Invalid("null argument");
    handoff::StreamWalker walker(static_cast<const uint8_t*>(stream), len);
    handoff::StreamHeader header;
    size_t needed = 0;
    HANDOFF_RETURN_IF_ERROR(walker.ReadHeader(&header, &needed));
    *header_len = walker.header_size();
    size_t n = 0;
    for (handoff::StreamPart part;;) {
      HANDOFF_RETURN_IF_ERROR(walker.Next(&part));
      if (part.is_end) break;
      if (n < max_frames) {
        offsets[n] = part.offset;
        lengths[n] = part.size;
      }
      n++;
    }
    *frame_count = n;
    return Status::Ok();
  });
}

int handoff_segment_table_length(const void* prefix, size_t len,
                                 uint64_t* table_len) noexcept {
  return Guard([&]() -> Status {
    if (prefix == nullptr || table_len == nullptr) return Invalid("null argument");
    size_t needed = 0;
    Status s = handoff::SegmentTableLength(static_cast<const uint8_t*>(prefix),
                                           len, table_len, &needed);
    if (s.code() == HANDOFF_E_TRUNCATED) *table_len = needed;
    return s;
  });
}

int handoff_segment_table_open(const void* table, size_t len,
                               const uint8_t root[HANDOFF_ROOT_SIZE],
                               HandoffSegmentTable** out) noexcept {
  return Guard([&]() -> Status {
    if (table == nullptr || out == nullptr) return Invalid("null argument");
    *out = nullptr;
    const auto* p = static_cast<const uint8_t*>(table);
    HANDOFF_RETURN_IF_ERROR(handoff::CheckRoot(p, len, root));
    auto h = std::make_unique<HandoffSegmentTable>();
    HANDOFF_RETURN_IF_ERROR(handoff::ParseSegmentTable(p, len, &h->table));
    *out = h.release();
    return Status::Ok();
  });
}

uint32_t handoff_segment_table_count(const HandoffSegmentTable* table) noexcept {
  return table == nullptr ? 0
                          : static_cast<uint32_t>(table->table.entries.size());
}

int handoff_segment_table_entry(const HandoffSegmentTable* table,
                                uint32_t number, uint64_t* offset,
                                uint32_t* length,
                                uint8_t sha256[HANDOFF_ROOT_SIZE],
                                uint32_t* deps, size_t max_deps,
                                size_t* dep_count) noexcept {
  return Guard([&]() -> Status {
    if (table == nullptr || (max_deps != 0 && deps == nullptr))
      return Invalid("null argument");
    const handoff::SegmentTable& t = table->table;
    if (number >= t.entries.size())
      return Invalid("segment number beyond the table");
    const handoff::SegmentEntry& e = t.entries[number];
    if (offset != nullptr) *offset = e.offset;
    if (length != nullptr) *length = e.length;
    if (sha256 != nullptr)
      std::memcpy(sha256, e.sha256.data(), handoff::kSha256Size);
    for (size_t i = 0; i < e.dep_count && i < max_deps; i++)
      deps[i] = t.DepsOf(number)[i];
    if (dep_count != nullptr) *dep_count = e.dep_count;
    return Status::Ok();
  });
}

int handoff_segment_table_locate(const HandoffSegmentTable* table,
                                 uint32_t region, uint64_t chunk_index,
                                 int* place, uint32_t* segment) noexcept {
  return Guard([&]() -> Status {
    if (table == nullptr || place == nullptr || segment == nullptr)
      return Invalid("null argument");
    if (!table->table.header.geometry.Contains(region, chunk_index))
      return Invalid("chunk outside the geometry");
    const handoff::IndexExtent* e =
        handoff::LocateChunk(table->table.index, region, chunk_index);
    *place = e ? static_cast<int>(e->place) : static_cast<int>(HANDOFF_CHUNK_BASE);
    *segment = e ? e->segment : 0;
    return Status::Ok();
  });
}

void handoff_segment_table_free(HandoffSegmentTable* table) noexcept {
  delete table;
}

}  // extern "C"
