// SPDX-License-Identifier: GPL-2.0-or-later
//
// Shared pieces of the qemu-handoff command-line tool: argument parsing,
// region specifications, writable image mappings, progress and JSON output.
#ifndef HANDOFF_TOOLS_CLI_H
#define HANDOFF_TOOLS_CLI_H

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "handoff.h"
#include "hex.h"

namespace handoff_cli {

// "--name value" options (repeatable), "--flag" switches, positionals.
class Args {
 public:
  Args(int argc, char** argv, int first, const std::vector<std::string>& flags);
  bool Has(const std::string& name) const;
  std::string Get(const std::string& name, const std::string& def = "") const;
  long long GetInt(const std::string& name, long long def) const;
  double GetDouble(const std::string& name, double def) const;
  const std::vector<std::string>& All(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  const std::string& error() const { return error_; }

 private:
  std::map<std::string, std::vector<std::string>> options_;
  std::vector<std::string> positional_;
  std::string error_;
};

struct RegionArg {
  std::string name;
  HandoffRegionKind kind;
  std::string path;
};

// Parses --mem [NAME=]PATH and --disk [NAME=]PATH; default names are
// "pc.ram" and "disk0", "disk1", ...
std::vector<RegionArg> ParseRegions(const Args& args);

// A file mapped shared, read-only or writable.
class Image {
 public:
  Image() = default;
  ~Image();
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  bool OpenRead(const std::string& path, std::string* err);
  // Creates or truncates @path to @size bytes and maps it writable.
  bool Create(const std::string& path, uint64_t size, std::string* err);
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  void Sync();

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// Pulls @enc's bytes until its stream is complete, at most @cap at a
// time, handing each piece to @sink, or until *@stop (when given) is set:
// the stream will not end. 0, or the code a pull failed with.
int DrainEncoder(HandoffEncoder* enc, size_t cap,
                 const std::function<void(const uint8_t*, size_t)>& sink,
                 const std::atomic<bool>* stop = nullptr);

double NowSeconds();
uint64_t NowNs();

// Rate-limited progress line on stderr.
class Progress {
 public:
  Progress(const char* what, bool enabled) : what_(what), enabled_(enabled) {}
  void Update(double done, double total, const char* unit);
  void Done();

 private:
  const char* what_;
  bool enabled_;
  double last_ = 0;
  bool printed_ = false;
};

// Minimal JSON object writer for --json output.
class Json {
 public:
  Json& Add(const std::string& key, const std::string& value);
  Json& Add(const std::string& key, const char* value);
  Json& Add(const std::string& key, double value);
  Json& Add(const std::string& key, uint64_t value);
  Json& Add(const std::string& key, int value);
  Json& AddRaw(const std::string& key, const std::string& json);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void Key(const std::string& key);
  std::string body_;
};
std::string JsonString(const std::string& s);

using handoff::Hex;                 // the engine's, src/hex.h
std::string ModeString(const HandoffMode& m);
int Fail(const char* command, int code);
// Prints the usage of @command (all commands when NULL) on stderr; 2.
int Usage(const char* command = nullptr);
// The same on stdout, for --help; 0.
int Help(const char* command = nullptr);

// A base opened for a command, freed with it.
using BaseHandle = std::unique_ptr<HandoffBase, void (*)(HandoffBase*)>;
// Opens the index at @path; on failure prints why (as @command) and
// returns an empty handle.
BaseHandle OpenBase(const std::string& path, const char* command);
// The --region argument for base region @name; null after printing that
// the command (which calls it @what, e.g. "image") needs one.
const RegionArg* FindRegion(const std::vector<RegionArg>& regions,
                            const char* name, const char* command,
                            const char* what);

// True when @a and @b name the same existing file (links included).
bool SameFile(const std::string& a, const std::string& b);

// False, after printing why (as @command), when @path names a file of
// @base (opened from @index_path): a region file or the index itself,
// under any name (links included). Opening it for writing would destroy
// the base, which is mapped at that moment.
bool CheckNotBaseFile(const HandoffBase* base, const std::string& index_path,
                      const std::string& path, const char* command);

int CmdBaseCreate(const Args& args);
int CmdBaseInfo(const Args& args);
int CmdBaseVerify(const Args& args);
int CmdEncode(const Args& args);
int CmdDecode(const Args& args);
int CmdInspect(const Args& args);
int CmdBench(const Args& args);

}  // namespace handoff_cli

#endif  // HANDOFF_TOOLS_CLI_H
