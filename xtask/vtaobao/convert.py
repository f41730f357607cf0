#!/usr/bin/env python3
"""Convert the original Virtual Taobao weights (eyounx/VirtualTaobao, virtualTB/data/*.pt: legacy
PyTorch pickles) into the one safetensors file mtrec reads (`virtualtb_v0.safetensors`, keys
user_generator.* / action.* / leave.*, f32, weights [out, in]).

Opt-in, needs python3 with torch and safetensors:

    mkdir -p data/cache/virtualtaobao && cd data/cache/virtualtaobao
    for m in generator_model action_model leave_model; do
      curl -fL -o $m.pt https://raw.githubusercontent.com/eyounx/VirtualTaobao/master/virtualTB/data/$m.pt
    done
    python3 ../../../xtask/vtaobao/convert.py .    # writes ./virtualtb_v0.safetensors

The simulator is by Shi et al. (AAAI 2019); its repository has no licence file and asks to cite the
paper.
"""

import pathlib
import sys

import torch
from safetensors.torch import save_file

PARTS = {"generator_model": "user_generator", "action_model": "action", "leave_model": "leave"}
SHAPES = {
    "user_generator": {"0.weight": (128, 128), "0.bias": (128,), "2.weight": (88, 128), "2.bias": (88,)},
    "action": {"0.weight": (128, 116), "0.bias": (128,), "2.weight": (256, 128), "2.bias": (256,),
               "4.weight": (21, 256), "4.bias": (21,)},
    "leave": {"0.weight": (128, 88), "0.bias": (128,), "2.weight": (256, 128), "2.bias": (256,),
              "4.weight": (101, 256), "4.bias": (101,)},
}


def main():
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out = {}
    for file, prefix in PARTS.items():
        path = folder / f"{file}.pt"
        if not path.exists():
            raise SystemExit(f"{path}: not found (download it first, see this script's docstring)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key, shape in SHAPES[prefix].items():
            if key not in state:
                raise SystemExit(f"{path}: no tensor '{key}' (has {sorted(state)})")
            t = state[key].float().contiguous()
            if tuple(t.shape) != shape:
                raise SystemExit(f"{path}: '{key}' has shape {tuple(t.shape)}, expected {shape}")
            out[f"{prefix}.{key}"] = t
    target = folder / "virtualtb_v0.safetensors"
    tmp = target.with_suffix(".tmp")
    save_file(out, str(tmp), metadata={"source": "eyounx/VirtualTaobao virtualTB/data/*.pt"})
    tmp.replace(target)
    print(f"wrote {target} ({len(out)} tensors)")


if __name__ == "__main__":
    main()
