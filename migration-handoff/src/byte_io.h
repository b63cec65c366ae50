// SPDX-License-Identifier: GPL-2.0-or-later
//
// Little-endian field access. The stream format is little-endian whatever
// the host; memcpy keeps unaligned access defined.
#ifndef HANDOFF_BYTE_IO_H
#define HANDOFF_BYTE_IO_H

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

namespace handoff {

template <typename T>
inline T ByteSwap(T v) {
  if constexpr (sizeof(T) == 1) return v;
  if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(v));
  if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(v));
  if constexpr (sizeof(T) == 8) return static_cast<T>(__builtin_bswap64(v));
}

template <typename T>
inline T LoadLe(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(v));
  if constexpr (std::endian::native == std::endian::big) v = ByteSwap(v);
  return v;
}

template <typename T>
inline void StoreLe(uint8_t* p, T v) {
  if constexpr (std::endian::native == std::endian::big) v = ByteSwap(v);
  std::memcpy(p, &v, sizeof(v));
}

// Appends fixed-width fields to a byte string.
class ByteWriter {
 public:
  explicit ByteWriter(std::string* out) : out_(out) {}
  template <typename T>
  void Put(T v) {
    uint8_t b[sizeof(T)];
    StoreLe<T>(b, v);
    out_->append(reinterpret_cast<const char*>(b), sizeof(T));
  }
  void PutBytes(const void* p, size_t n) {
    out_->append(static_cast<const char*>(p), n);
  }

 private:
  std::string* out_;
};

// Reads fixed-width fields, remembering whether it ran past the end
// instead of reading out of bounds.
class ByteReader {
 public:
  ByteReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <typename T>
  T Get() {
    if (n_ - pos_ < sizeof(T) || pos_ > n_) {
      overrun_ = true;
      pos_ = n_;
      return T{};
    }
    T v = LoadLe<T>(p_ + pos_);
    pos_ += sizeof(T);
    return v;
  }
  const uint8_t* GetBytes(size_t n) {
    if (n_ - pos_ < n) {
      overrun_ = true;
      pos_ = n_;
      return nullptr;
    }
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  bool overrun() const { return overrun_; }
  size_t pos() const { return pos_; }
  size_t remaining() const { return n_ - pos_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  bool overrun_ = false;
};

}  // namespace handoff

#endif  // HANDOFF_BYTE_IO_H
