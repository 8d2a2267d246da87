"""tests/k8s_live/_crds.py: kubernetes-models schemas back into structural CRD schemas (pure logic).

Whether a live server takes the result is proven by .ci/k8s-setup.sh (it creates them)
and by the tests that store custom resources (test_gateway_live.py, test_export_live.py).
"""

from __future__ import annotations

from tests.k8s_live._crds import structural


def test_nullable_one_of_collapses_to_its_schema() -> None:
    node = {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "null"}], "description": "d"}
    assert structural(node) == {"type": "string", "maxLength": 3, "description": "d"}


def test_integer_or_string_becomes_int_or_string() -> None:
    node = {"oneOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"type": "null"}]}
    assert structural(node) == {"x-kubernetes-int-or-string": True}


def test_an_open_schema_keeps_its_contents() -> None:
    assert structural({"oneOf": [{}, {"type": "null"}]}) == {"x-kubernetes-preserve-unknown-fields": True}
    assert structural({"type": "object", "nullable": True}) == {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_objects_get_their_type_but_junctor_branches_do_not() -> None:
    node = {"properties": {"a": {"type": "string"}},
            "oneOf": [{"properties": {"a": {"enum": ["x"]}}}, {"required": ["a"]}]}
    out = structural(node)
    assert out["type"] == "object"
    assert all("type" not in branch for branch in out["oneOf"])


def test_property_maps_values_and_defaults_are_not_schemas() -> None:
    node = {"type": "object", "properties": {}, "required": ["x"],
            "default": {}, "enum": [{}]}
    assert structural(node) == node
