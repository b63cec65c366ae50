# SPDX-License-Identifier: GPL-2.0-or-later
"""serve --clients: the operator's file of what each client may ask."""

import json

import pytest

from qemu_handoff.synthesis.client_policy import (ClientPolicy,
                                                  ClientPolicyError)


def policy(tmp_path, rules):
    path = tmp_path / "clients.json"
    path.write_text(json.dumps(rules) if not isinstance(rules, str)
                    else rules)
    return ClientPolicy.load(str(path))


def test_rules_by_name_then_any(tmp_path):
    p = policy(tmp_path, {"phone0": {"bases": ["ocr"], "max-vms": 2},
                          "*": {"max-vms": 1}})
    assert p.may_use("phone0", "ocr") and not p.may_use("phone0", "face")
    assert p.max_vms("phone0", 4) == 2
    assert p.may_use("laptop", "face") and p.max_vms("laptop", 4) == 1
    assert p.admits("laptop")


def test_without_any_a_stranger_is_refused(tmp_path):
    p = policy(tmp_path, {"phone0": {}})
    assert p.admits("phone0") and p.max_vms("phone0", 4) == 4
    assert not p.admits("laptop") and not p.may_use("laptop", "ocr")
    assert p.max_vms("laptop", 4) == 0


def test_no_file_allows_everything():
    p = ClientPolicy()
    assert p.admits("x") and p.may_use("x", "y") and p.max_vms("x", 3) == 3


@pytest.mark.parametrize("rules,cause", [
    ("[1]", "not a JSON object"),
    ("{", "Expecting"),
    ({"a": {"bases": "ocr"}}, "bases is not a list of names"),
    ({"a": {"max-vms": -1}}, "max-vms is not a count"),
    ({"a": {"max-vms": True}}, "max-vms is not a count"),
    ({"a": {"quota": 1}}, "an object of ['bases', 'max-vms'] only"),
])
def test_a_bad_file_stops_the_service(tmp_path, rules, cause):
    with pytest.raises(ClientPolicyError, match=cause.replace("[", r"\[")):
        policy(tmp_path, rules)
