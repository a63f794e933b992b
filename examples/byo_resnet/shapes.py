"""A small image data set this example makes itself (nothing is downloaded): webdataset-style tar
shards of 32x32 PNGs in four classes -- a bright square in one of the four quadrants, on noise, in
a random colour -- written to GCS with a manifest by trainer.data.write_tar_dataset.

    python examples/byo_resnet/shapes.py gs://bucket/shapes [--n 2000] [--shards 8]
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np
from PIL import Image
from trainer import data

CLASSES = 4
SIZE = 32


def image(rng: np.random.Generator, cls: int) -> bytes:
    img = rng.integers(0, 96, size=(SIZE, SIZE, 3), dtype=np.uint8)
    half = SIZE // 2
    side = int(rng.integers(7, 13))
    y0 = (cls // 2) * half + int(rng.integers(0, half - side + 1))
    x0 = (cls % 2) * half + int(rng.integers(0, half - side + 1))
    img[y0 : y0 + side, x0 : x0 + side] = rng.integers(160, 256, size=3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def records(n: int, seed: int = 0) -> list[dict[str, bytes | int]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=n)
    return [{"png": image(rng, int(c)), "cls": int(c)} for c in labels]


def write(uri: str, n: int = 2000, shards: int = 8, val_shards: int = 2, seed: int = 0) -> data.Manifest:
    return data.write_tar_dataset(
        uri,
        records(n, seed),
        CLASSES,
        shards=shards,
        val_shards=val_shards,
        val_fraction=0.2,
        meta={"source": "examples/byo_resnet/shapes.py", "seed": seed},
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("uri")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    m = write(a.uri, a.n, a.shards, seed=a.seed)
    print(m.uri, m.generation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
