"""Checking an RO-Crate as RO-Crate 1.1 describes it, offline.

rocrate 0.16 has no validator of its own, and rocrate-validator fetches the context from the
network. So: the JSON-LD against the RO-Crate context the ``rocrate`` package ships (every term
used is defined there, or an absolute IRI), plus the 1.1 specification's structural rules
(metadata descriptor, root data entity and its required properties, data entities present,
every reference resolving), and a load back with ``rocrate``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from importlib.resources import files
from pathlib import Path

CONTEXT_11 = "https://w3id.org/ro/crate/1.1/context"
JSONLD_KEYWORDS = {"@id", "@type", "@value", "@language", "@list", "@set", "@reverse", "@graph"}


def context_terms() -> set[str]:
    """The terms of the RO-Crate JSON-LD context bundled with ``rocrate`` (schema.org and the
    RO-Crate additions; a later version of the same context keeps every 1.1 term)."""
    context = json.loads((files("rocrate") / "data" / "ro-crate.jsonld").read_text())["@context"]
    return set(context)


def _absolute_iri(text: str) -> bool:
    scheme, sep, rest = text.partition(":")
    return bool(sep and scheme.isalpha() and rest)


def check_ro_crate_11(crate_dir: Path) -> dict:
    """Raise AssertionError unless ``crate_dir`` holds an RO-Crate 1.1; returns ``{@id: entity}``."""
    metadata = json.loads((crate_dir / "ro-crate-metadata.json").read_text())
    assert metadata["@context"] == CONTEXT_11, metadata["@context"]
    graph = metadata["@graph"]
    entities = {}
    for entity in graph:
        assert isinstance(entity.get("@id"), str) and entity.get("@type"), entity
        assert entity["@id"] not in entities, f"{entity['@id']} twice in @graph"
        entities[entity["@id"]] = entity
    descriptor = entities["ro-crate-metadata.json"]
    assert descriptor["@type"] == "CreativeWork"
    assert descriptor["conformsTo"] == {"@id": "https://w3id.org/ro/crate/1.1"}
    root = entities[descriptor["about"]["@id"]]
    assert root["@id"] == "./" and root["@type"] == "Dataset"
    for key in ("name", "description", "datePublished", "license"):
        assert root.get(key), f"the root data entity has no {key}"
    datetime.datetime.fromisoformat(root["datePublished"])
    terms = context_terms()
    for entity in graph:
        for key, value in entity.items():
            assert key in JSONLD_KEYWORDS or key in terms or _absolute_iri(key), f"{entity['@id']}: {key!r} is not a term"
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and set(item) == {"@id"}:
                    ref = item["@id"]
                    assert ref in entities or _absolute_iri(ref), f"{entity['@id']}.{key} -> {ref} is not in the crate"
        types = entity["@type"] if isinstance(entity["@type"], list) else [entity["@type"]]
        for t in types:
            assert t in terms, f"{entity['@id']}: type {t!r} is not a term"
    for part in root.get("hasPart", []):
        entity = entities[part["@id"]]
        if "File" in (entity["@type"] if isinstance(entity["@type"], list) else [entity["@type"]]):
            assert (crate_dir / part["@id"]).is_file(), f"data entity {part['@id']} is not in the crate"
    from rocrate.rocrate import ROCrate

    loaded = ROCrate(str(crate_dir))  # the library reads it back
    assert loaded.root_dataset["name"] == root["name"]
    return entities


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def listed_files(entities: dict, dataset_did: str) -> dict[str, dict]:
    """``{file name: entity}`` of the files the crate lists for a catalogue dataset."""
    dataset = entities[f"#dataset/{dataset_did}"]
    return {entities[p["@id"]]["name"]: entities[p["@id"]] for p in dataset.get("hasPart", [])}
