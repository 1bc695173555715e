"""A model's inputs read from its OpenVINO IR XML, without OpenVINO: recorded in the manifest at
import (``io``), so a client can check shapes before queueing anything (``ovbatch benchmark``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from ovbatch.errors import BadInputError


def model_io(xml_text: str) -> dict[str, Any]:
    """The inputs (name, shape, element type) of an OpenVINO IR, from its XML: what submission checks
    (the worker checks the model OpenVINO reads)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise BadInputError(f"not an OpenVINO IR XML ({exc})") from None
    inputs = []
    layers = root.find("layers")  # the top graph only: loop and subgraph bodies have Parameters of their own
    for layer in layers.findall("layer") if layers is not None else []:
        if layer.get("type") == "Parameter":
            data = layer.find("data")
            port = layer.find("output/port")
            names = (port.get("names") if port is not None else None) or layer.get("name") or ""
            shape = (data.get("shape") if data is not None else "") or ""
            inputs.append(
                {
                    "name": names.split(",")[0].strip(),
                    "shape": [d.strip() for d in shape.split(",") if d.strip()],
                    "type": (data.get("element_type") if data is not None else "") or "f32",
                }
            )
    return {"inputs": inputs}
