"""Frame columns between numpy and parquet, in the arrow types and Hugging Face schema LeRobot uses.

A feature of shape [1] is a plain column (float32, int64, bool); shape [D] is fixed_size_list<dtype>[D].
The `huggingface` schema metadata lets LeRobot's `datasets`-based loader restore the same feature types.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from policylab.datasets.errors import DatasetError
from policylab.datasets.stats import is_visual

_ARROW_TYPES = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "string": pa.string(),
}


def _arrow_type(key: str, feature: dict) -> pa.DataType:
    if feature["dtype"] not in _ARROW_TYPES:
        raise DatasetError(f"feature '{key}': dtype '{feature['dtype']}' cannot be stored in parquet")
    shape = list(feature["shape"])
    if shape == [1]:
        return _ARROW_TYPES[feature["dtype"]]
    if len(shape) != 1:
        raise DatasetError(f"feature '{key}': only shapes [1] and [D] are stored in parquet, got {shape}")
    return pa.list_(_ARROW_TYPES[feature["dtype"]], shape[0])


def _hf_feature(feature: dict, list_type: str) -> dict:
    value = {"dtype": feature["dtype"], "_type": "Value"}
    if list(feature["shape"]) == [1]:
        return value
    return {"feature": value, "length": feature["shape"][0], "_type": list_type}


def columns_to_table(columns: dict[str, np.ndarray], features: dict, codebase_version: str) -> pa.Table:
    """One episode's columns (N, ...) -> arrow table with LeRobot's schema (video features excluded)."""
    arrays, fields, hf_features = [], [], {}
    list_type = "List" if codebase_version == "v3.0" else "Sequence"
    for key, feature in features.items():
        if is_visual(feature):
            continue
        if key not in columns:
            raise DatasetError(f"episode is missing feature '{key}'")
        arrow_type = _arrow_type(key, feature)
        values = np.asarray(columns[key])
        if isinstance(arrow_type, pa.FixedSizeListType):
            flat = pa.array(values.reshape(-1).astype(feature["dtype"]), arrow_type.value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, arrow_type.list_size))
        else:
            arrays.append(pa.array(values.reshape(-1), arrow_type))
        fields.append(pa.field(key, arrow_type))
        hf_features[key] = _hf_feature(feature, list_type)
    metadata = {b"huggingface": json.dumps({"info": {"features": hf_features}}).encode()}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def column_to_numpy(table: pa.Table, key: str, feature: dict, path: Path) -> np.ndarray:
    """A parquet column as (N, *shape) numpy ([1]-shaped features become (N,)); images become (N, H, W, 3)."""
    if key not in table.column_names:
        raise DatasetError(f"{path}: column '{key}' declared in meta/info.json is missing")
    column = table.column(key).combine_chunks()
    if feature["dtype"] == "image":
        return np.stack([_decode_image(cell["bytes"], path, key) for cell in column.to_pylist()])
    shape = list(feature["shape"])
    value_type = (
        column.type.value_type
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type)
        else column.type
    )
    declared = _ARROW_TYPES.get(feature["dtype"])
    if declared is not None and value_type != declared:
        raise DatasetError(
            f"{path}: column '{key}' holds {value_type}, meta/info.json declares {feature['dtype']}"
        )
    try:
        if shape == [1]:
            values = column.to_numpy(zero_copy_only=False)
            return values.reshape(len(values))
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), *shape)
    except (pa.ArrowException, ValueError, AttributeError) as error:
        raise DatasetError(
            f"{path}: column '{key}' has arrow type {column.type}, expected {feature['dtype']} of shape {shape}"
        ) from error


def _decode_image(data: bytes | None, path: Path, key: str) -> np.ndarray:
    from PIL import Image

    if data is None:
        raise DatasetError(f"{path}: column '{key}' has an image without embedded bytes")
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
