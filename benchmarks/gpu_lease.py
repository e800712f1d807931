"""Move ml-1m work to a lent GPU and back: what the 64 MiB working-tree limit of such a lease allows.

A lease (the workplace's device tool) copies the repository and at most 64 MiB in all, and its
machine cannot download anything. The repository is ~38 MiB, so this script packs the rest of what
ml-1m runs need into ``.devdata`` (git-ignored) and brings the run folders back afterwards:

* ``pack``: the raw ml-1m files (xz; their sha256 is the split's fingerprint, so they travel
  byte for byte) and the cached semantic features. The features are 92 MB, 84 of them the original
  text's token states (3,416 items x 32 x 384 float16). Every DMESR run keeps only their top-64
  principal components (``items.token_pca_dim: 64``, dmesr.models.item_encoders._pca_reduce), so the
  tokens travel as their mean, top-64 directions and scores; ``unpack`` writes the rank-64
  reconstruction, whose top-64 PCA equals the original one up to float16 rounding and the sign of
  each direction (:func:`check_reconstruction` measures that). A run with ``token_pca_dim: 0`` would
  see different tokens: such runs must not be trained from unpacked features.
* ``unpack`` (on the GPU machine): rebuild ``$DMESR_HOME`` from ``.devdata``. A semantic run that
  comes back unfinished resumes only from such a copy (``unpack .devdata /tmp/dmesr_lease_home`` here,
  then ``DMESR_HOME=/tmp/dmesr_lease_home``): its features' fingerprint says so.
* ``collect`` (on the GPU machine): tar the run folders into ``$OUT`` (at most 8 files of 16 MiB
  come back): finished runs without checkpoints, unfinished ones with theirs, so they resume here.

    python benchmarks/gpu_lease.py pack .devdata            # here, with DMESR_HOME set
    bash benchmarks/gpu_lease.sh 480                        # there (the device tool's command)
    tar -xf /work/.device/.../runs-00.tar                   # here, for every part that came back
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np

from dmesr.data.registry import dmesr_home

DATASET = "ml-1m"
PCA_DIM = 64
FEATURES = Path("enrich") / DATASET / "features" / "cascade__all-MiniLM-L6-v2"
PART_BYTES = 15 * 2**20
MAX_PARTS = 4  # with logs.tar and collected.json: 6 of the 8 files, under the 64 MiB that come back
CHECKPOINTS = ("checkpoint.pt", "best.pt")


def token_pca(tokens: np.ndarray, mask: np.ndarray, dim: int) -> dict:
    """Mean, top-``dim`` directions and scores of the real (unmasked) token states, in float64."""
    real = tokens[mask].astype(np.float64)
    mean = real.mean(axis=0)
    centred = real - mean
    _, directions = np.linalg.eigh(centred.T @ centred)
    top = directions[:, -dim:][:, ::-1]
    return {"mean": mean, "directions": top, "scores": (centred @ top).astype(np.float16)}


def reconstruct(pca: dict, mask: np.ndarray, dim: int) -> np.ndarray:
    tokens = np.zeros((*mask.shape, dim), dtype=np.float16)
    tokens[mask] = (pca["mean"] + pca["scores"].astype(np.float64) @ pca["directions"].T).astype(np.float16)
    return tokens


def pack(out: Path) -> None:
    source, out = dmesr_home(), out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "raw.tar.xz", "w:xz", preset=9) as archive:
        archive.add(source / "raw" / DATASET, arcname=f"raw/{DATASET}")
    features = source / FEATURES
    arrays = {path.stem: np.load(path, allow_pickle=False) for path in features.glob("*.npy")}
    tokens, mask = arrays.pop("text_tokens"), arrays["text_mask"]
    pca = token_pca(tokens, mask, PCA_DIM)
    np.savez_compressed(out / "features.npz", **arrays, **{f"pca_{k}": v for k, v in pca.items()},
                        token_shape=np.array(tokens.shape))
    shutil.copy(features / "meta.json", out / "features-meta.json")
    print(f"packed {DATASET}: " + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in sorted(out.iterdir())))


def load_pack(folder: Path) -> tuple[dict, dict, tuple]:
    """What ``pack`` wrote: the feature arrays but the tokens, the tokens' PCA, and their shape."""
    saved = dict(np.load(folder / "features.npz"))
    pca = {k[len("pca_"):]: saved.pop(k) for k in list(saved) if k.startswith("pca_")}
    return saved, pca, tuple(saved.pop("token_shape"))


def unpack(folder: Path, target: Path) -> None:
    with tarfile.open(folder / "raw.tar.xz") as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuses links and paths outside target
            archive.extractall(target, filter="data")
        else:  # the same refusals by hand (Debian 12's Python is 3.11.2)
            for member in archive.getmembers():
                if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() \
                        or ".." in Path(member.name).parts:
                    raise ValueError(f"{folder / 'raw.tar.xz'}: refusing to extract {member.name!r}")
            archive.extractall(target)
    features = target / FEATURES
    features.mkdir(parents=True, exist_ok=True)
    arrays, pca, token_shape = load_pack(folder)
    for name, array in arrays.items():
        np.save(features / f"{name}.npy", array)
    np.save(features / "text_tokens.npy", reconstruct(pca, arrays["text_mask"], int(token_shape[2])))
    # A run records its features' source fingerprint (data.json) and refuses to resume or be re-evaluated
    # with others: the PCA directions' signs differ between these tokens and the originals (35 of 64 on
    # ml-1m), so a run started on one set must end on it.
    meta = json.loads((folder / "features-meta.json").read_text())
    meta["source_fingerprint"] += f"+pca{PCA_DIM}"
    meta["token_states"] = f"rank-{PCA_DIM} PCA reconstruction (benchmarks/gpu_lease.py)"
    (features / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"unpacked {DATASET} into {target}")


def check_reconstruction(folder: Path) -> float:
    """Largest difference between the model's token PCA of the original and the unpacked tokens
    (each direction's sign aligned), relative to the largest original score."""
    import torch

    from dmesr.models.item_encoders import _pca_reduce

    features = dmesr_home() / FEATURES
    mask = np.load(features / "text_mask.npy")
    original = torch.as_tensor(np.load(features / "text_tokens.npy")[mask]).float()
    _, pca, _ = load_pack(folder)
    rebuilt = torch.as_tensor(reconstruct(pca, mask, original.shape[1])[mask]).float()
    a, b = _pca_reduce(original, PCA_DIM), _pca_reduce(rebuilt, PCA_DIM)
    b = b * torch.sign((a * b).sum(dim=0))
    return float((a - b).abs().max() / a.abs().max())


def collect(out: Path, logs: Path, roots: list[Path]) -> None:
    """Finished runs' small files first, then unfinished runs (most epochs first) with checkpoints,
    in tar parts of at most 15 MiB; whatever does not fit is named and left behind. ``logs`` goes
    into logs.tar."""
    with tarfile.open(out / "logs.tar", "w") as archive:
        archive.add(logs)
    runs = sorted({p.parent for root in roots for p in root.rglob("config.yaml")})
    finished = [r for r in runs if (r / "final.json").exists()]
    epochs = {r: len((r / "epochs.csv").read_text().splitlines()) - 1  # epochs done (the header left out)
              for r in runs if r not in finished and (r / "checkpoint.pt").exists()}
    unfinished = sorted(epochs, key=lambda r: -epochs[r])
    parts: list[list[Path]] = [[]]
    sizes = [0]
    left_out = []
    for run in finished + unfinished:
        files = [f for f in run.iterdir() if f.is_file() and not f.name.endswith(".tmp")
                 and (run in epochs or f.name not in CHECKPOINTS)]
        size = sum(f.stat().st_size for f in files) + 1024 * len(files)
        if sizes[-1] + size > PART_BYTES:
            if len(parts) == MAX_PARTS:
                left_out.append(str(run))
                continue
            parts.append([])
            sizes.append(0)
        parts[-1].extend(files)
        sizes[-1] += size
    for index, files in enumerate(parts):
        with tarfile.open(out / f"runs-{index:02d}.tar", "w") as archive:
            for f in files:
                archive.add(f)
    summary = {"finished": [str(r) for r in finished], "unfinished_epochs": {str(r): n for r, n in epochs.items()},
               "left_out": left_out}
    (out / "collected.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack").add_argument("folder", type=Path)
    p = sub.add_parser("unpack")
    p.add_argument("folder", type=Path)
    p.add_argument("target", type=Path)
    sub.add_parser("check").add_argument("folder", type=Path)
    p = sub.add_parser("collect")
    p.add_argument("out", type=Path)
    p.add_argument("logs", type=Path)
    p.add_argument("roots", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.folder)
    elif args.command == "unpack":
        unpack(args.folder, args.target)
    elif args.command == "check":
        print(f"token PCA of unpacked vs original features: max relative difference {check_reconstruction(args.folder):.2e}")
    else:
        collect(args.out, args.logs, [r for r in args.roots if r.exists()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
