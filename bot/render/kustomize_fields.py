"""The exact field names Kustomize decodes, and a check that a kustomization uses only those.

Kustomize turns a kustomization into JSON and decodes it with Go's
``encoding/json``, which matches field names ignoring case, with Unicode simple
folding: ``Resources``, ``RESOURCES`` and ``reſources`` (long s) all fill
``resources``. Sluice's static walk reads exact names only, so a key it would not
read must not reach kubectl either: every key at every level must be the
canonical spelling. The schema mirrors ``api/types`` of Kustomize v5.8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.render.limits import RenderError


@dataclass(frozen=True)
class Struct:
    fields: dict[str, Schema]


@dataclass(frozen=True)
class ListOf:
    item: Schema


# A scalar, or a map whose keys are data (labels, annotations, values): not checked.
FREE = None

Schema = Struct | ListOf | None

_OBJECT_META = Struct({"name": FREE, "namespace": FREE, "labels": FREE, "annotations": FREE})
_GVK = {"group": FREE, "version": FREE, "kind": FREE}
_RESID = {**_GVK, "name": FREE, "namespace": FREE}
_SELECTOR = Struct({**_RESID, "annotationSelector": FREE, "labelSelector": FREE})
_FIELD_OPTIONS = Struct({"delimiter": FREE, "index": FREE, "encoding": FREE, "create": FREE})
_GENERATOR_OPTIONS = Struct(
    {"labels": FREE, "annotations": FREE, "disableNameSuffixHash": FREE, "immutable": FREE}
)
_GENERATOR_ARGS = {
    "namespace": FREE,
    "name": FREE,
    "behavior": FREE,
    "literals": FREE,
    "files": FREE,
    "envs": FREE,
    "env": FREE,
    "options": _GENERATOR_OPTIONS,
}
_PATCH = Struct(
    {
        "path": FREE,
        "patch": FREE,
        "target": _SELECTOR,
        "options": Struct({"allowNameChange": FREE, "allowKindChange": FREE}),
    }
)
_REPLACEMENT = {
    "source": Struct({**_RESID, "fieldPath": FREE, "options": _FIELD_OPTIONS}),
    "targets": ListOf(
        Struct(
            {
                "select": _SELECTOR,
                "reject": ListOf(_SELECTOR),
                "fieldPaths": FREE,
                "options": _FIELD_OPTIONS,
            }
        )
    ),
    "sourceValue": FREE,
}
_IMAGE = Struct({"name": FREE, "newName": FREE, "tagSuffix": FREE, "newTag": FREE, "digest": FREE})
_FIELD_SPEC = Struct({**_GVK, "path": FREE, "create": FREE})
KUSTOMIZATION = Struct(
    {
        "apiVersion": FREE,
        "kind": FREE,
        "metadata": _OBJECT_META,
        "openapi": FREE,
        "namePrefix": FREE,
        "nameSuffix": FREE,
        "namespace": FREE,
        "commonLabels": FREE,
        "labels": ListOf(
            Struct(
                {
                    "pairs": FREE,
                    "includeSelectors": FREE,
                    "includeTemplates": FREE,
                    "fields": ListOf(_FIELD_SPEC),
                }
            )
        ),
        "commonAnnotations": FREE,
        "patchesStrategicMerge": FREE,
        "patchesJson6902": ListOf(_PATCH),
        "patches": ListOf(_PATCH),
        "images": ListOf(_IMAGE),
        "imageTags": ListOf(_IMAGE),
        "replacements": ListOf(Struct({**_REPLACEMENT, "path": FREE})),
        "replicas": ListOf(Struct({"name": FREE, "count": FREE})),
        "vars": ListOf(
            Struct(
                {
                    "name": FREE,
                    "objref": Struct({"apiVersion": FREE, **_GVK, "name": FREE, "namespace": FREE}),
                    "fieldref": Struct({"fieldPath": FREE}),
                }
            )
        ),
        "sortOptions": Struct(
            {
                "order": FREE,
                "legacySortOptions": Struct({"orderFirst": FREE, "orderLast": FREE}),
            }
        ),
        "resources": FREE,
        "components": FREE,
        "crds": FREE,
        "bases": FREE,
        "configMapGenerator": ListOf(Struct(_GENERATOR_ARGS)),
        "secretGenerator": ListOf(Struct({**_GENERATOR_ARGS, "type": FREE})),
        "helmGlobals": Struct({"chartHome": FREE, "configHome": FREE}),
        "helmCharts": FREE,
        "helmChartInflationGenerator": FREE,
        "generatorOptions": _GENERATOR_OPTIONS,
        "configurations": FREE,
        "generators": FREE,
        "transformers": FREE,
        "validators": FREE,
        "buildMetadata": FREE,
    }
)

# Builtin generator/transformer configurations (``generators: [file]``) that read
# files: the same decoding applies to them. ``metadata`` is a full ObjectMeta there.
_PLUGIN_HEAD = {"apiVersion": FREE, "kind": FREE, "metadata": _OBJECT_META}
BUILTIN_PLUGINS: dict[str, Struct] = {
    "ConfigMapGenerator": Struct({**_PLUGIN_HEAD, **_GENERATOR_ARGS}),
    "SecretGenerator": Struct({**_PLUGIN_HEAD, **_GENERATOR_ARGS, "type": FREE}),
    "PatchTransformer": Struct({**_PLUGIN_HEAD, **_PATCH.fields}),
    "PatchJson6902Transformer": Struct(
        {**_PLUGIN_HEAD, "target": _SELECTOR, "path": FREE, "jsonOp": FREE}
    ),
    "PatchStrategicMergeTransformer": Struct({**_PLUGIN_HEAD, "paths": FREE, "patches": FREE}),
    "ReplacementTransformer": Struct(
        {**_PLUGIN_HEAD, "replacements": ListOf(Struct({**_REPLACEMENT, "path": FREE}))}
    ),
}


def check_fields(data: Any, schema: Schema, source: str, where: str = "") -> None:
    """Refuse any key in ``data`` that is not spelled exactly as ``schema`` names it."""
    if isinstance(schema, ListOf):
        if isinstance(data, list):
            for index, item in enumerate(data):
                check_fields(item, schema.item, source, f"{where}[{index}]")
        return
    if not isinstance(schema, Struct) or not isinstance(data, dict):
        return  # free-form, or a type kubectl will refuse itself
    for key, value in data.items():
        if not isinstance(key, str) or key not in schema.fields:
            raise RenderError(_unknown_key_message(key, schema, source, where))
        check_fields(value, schema.fields[key], source, f"{where}.{key}" if where else key)


def _unknown_key_message(key: Any, schema: Struct, source: str, where: str) -> str:
    place = f"{source}: {where + ': ' if where else ''}key {key!r}"
    canonical = next((f for f in schema.fields if isinstance(key, str) and go_fold(key, f)), None)
    if canonical is not None:
        return (
            f"{place} is not the exact field name {canonical!r}; Kustomize would read it as "
            f"{canonical!r} (it ignores case and Unicode folding), so Sluice accepts only the "
            "exact spelling"
        )
    return f"{place} is not a Kustomize field"


def go_fold(a: str, b: str) -> bool:
    """Whether Go's encoding/json would match ``a`` to field ``b`` (simple case folding)."""
    if len(a) != len(b):
        return False
    return all(
        x == y or x.upper() == y.upper() or x.lower() == y.lower()
        for x, y in zip(a, b, strict=True)
    )
