# SPDX-License-Identifier: GPL-2.0-or-later
"""What each client of the synthesis service may do (serve --clients FILE).

The CA decides who may connect; this file, the operator's, decides what a
connected client may ask: which bases it may synthesize from (by their
names in --bases) and how many VMs it may hold. A client is its
certificate's common name; "*" stands for any client the file does not
name. Without a file every client may use every base, up to
--max-vms-per-client. With one, a client it does not name (and no "*") is
refused before it sends its overlay.

    {"phone0": {"bases": ["debian12-ocr"], "max-vms": 2},
     "*":      {"bases": ["debian12"], "max-vms": 1}}

A base a client may not use is refused exactly as one the cloudlet does
not hold: the refusal tells no client which bases exist.
"""

import json

ANY = "*"
FIELDS = frozenset(("bases", "max-vms"))


class ClientPolicyError(Exception):
    """The file cannot be used, with the reason (the service does not
    start)."""


class ClientPolicy:
    def __init__(self, rules=None):
        """@rules: client name -> {"bases": set or None, "max-vms": int or
        None}; None: no file, everything allowed."""
        self.rules = rules

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            raise ClientPolicyError(f"--clients {path}: {e}") from None
        if not isinstance(raw, dict):
            raise ClientPolicyError(f"--clients {path}: not a JSON object")
        return cls({name: _rule(path, name, rule)
                    for name, rule in raw.items()})

    def _rule(self, owner):
        if self.rules is None:
            return {"bases": None, "max-vms": None}
        return self.rules.get(owner, self.rules.get(ANY))

    def admits(self, owner):
        return self._rule(owner) is not None

    def may_use(self, owner, base_name):
        rule = self._rule(owner)
        return rule is not None and (rule["bases"] is None or
                                     base_name in rule["bases"])

    def max_vms(self, owner, default):
        rule = self._rule(owner)
        if rule is None:
            return 0
        return default if rule["max-vms"] is None else rule["max-vms"]


def _rule(path, name, rule):
    where = f"--clients {path}: client {name!r}"
    if not isinstance(rule, dict) or set(rule) - FIELDS:
        raise ClientPolicyError(f"{where}: an object of {sorted(FIELDS)} "
                                f"only")
    bases = rule.get("bases")
    if bases is not None and (not isinstance(bases, list) or not all(
            isinstance(b, str) for b in bases)):
        raise ClientPolicyError(f"{where}: bases is not a list of names")
    max_vms = rule.get("max-vms")
    if max_vms is not None and (type(max_vms) is not int or max_vms < 0):
        raise ClientPolicyError(f"{where}: max-vms is not a count")
    return {"bases": None if bases is None else set(bases),
            "max-vms": max_vms}
