// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff: offline front end of the handoff engine — index bases,
// encode and decode streams between image files, inspect and benchmark.
#include <cstring>
#include <string>

#include "cli.h"

using namespace handoff_cli;

int main(int argc, char** argv) {
  static const std::vector<std::string> flags = {
      "--json", "--quiet", "--adaptive", "--no-random", "--no-dedup",
      "--segmented",
      "--help"};
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))
    return Usage();
  std::string cmd = argv[1];
  if (cmd == "--version") {
    printf("qemu-handoff %s\n", handoff_version_string());
    return 0;
  }
  static const char* const commands[] = {"base", "encode", "decode",
                                          "inspect", "bench"};
  const char* known = nullptr;
  for (const char* c : commands)
    if (cmd == c) known = c;
  if (known == nullptr) return Usage();
  for (int i = 2; i < argc; i++)
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h"))
      return Help(known);
  if (cmd == "base") {
    if (argc < 3) return Usage("base");
    Args args(argc, argv, 3, flags);
    if (!args.error().empty()) {
      fprintf(stderr, "qemu-handoff: %s\n", args.error().c_str());
      return 2;
    }
    std::string sub = argv[2];
    if (sub == "create") return CmdBaseCreate(args);
    if (sub == "info") return CmdBaseInfo(args);
    if (sub == "verify") return CmdBaseVerify(args);
    return Usage("base");
  }
  Args args(argc, argv, 2, flags);
  if (!args.error().empty()) {
    fprintf(stderr, "qemu-handoff: %s\n", args.error().c_str());
    return 2;
  }
  if (cmd == "encode") return CmdEncode(args);
  if (cmd == "decode") return CmdDecode(args);
  if (cmd == "inspect") return CmdInspect(args);
  if (cmd == "bench") return CmdBench(args);
  return Usage();
}
