"""The ``paper`` profile's data: the paper's 22 datasets as MEKA/MULAN ARFF files (:data:`PAPER_DATASETS`,
:func:`load_arff`, :func:`find_arff`, :func:`paper_dataset`), and :func:`load_stream`, a stream by name at any
profile."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from prunebook.config import DRY_STEPS, dry_grid, dry_run_requested, dry_steps
from prunebook.data import missing_dataset, search_roots, stand_in_multilabel
from river.stream import iter_arff

from .streams import MLStream, drifting_blocks, yeast

# The 22 datasets of the paper's tables (names as in its result files) and the ARFF file stems they usually have in
# the MEKA/MULAN distributions (https://www.uco.es/kdis/mllresources/).
PAPER_DATASETS = {
    "Flags": ["flags"], "WaterQuality": ["water-quality", "waterquality", "water_quality"],
    "Emotions": ["emotions"], "VirusGO": ["virusgo", "virus"], "Birds": ["birds"], "Yeast": ["yeast"],
    "Scene": ["scene"], "Human": ["human", "humanpseaac"], "Yelp": ["yelp"], "Medical": ["medical"],
    "Eukaryote": ["eukaryote", "eukaryotepseaac"], "Slashdot": ["slashdot"], "Enron": ["enron"],
    "Hypercube": ["hypercube"], "Langlog": ["langlog"], "Stackex": ["stackex", "stackex_chess", "stackexchess"],
    "Tmc": ["tmc", "tmc2007", "tmc2007-500", "tmc2007_500"], "Ohsumed": ["ohsumed"],
    "D20ng": ["d20ng", "20ng"], "Bibtex": ["bibtex"],
    "Nuswidec": ["nuswidec", "nus-wide-cvladplus", "nuswide_cvladplus"],
    "Imdb": ["imdb"],
}

# (features, labels) of each dataset as the KDIS repository lists them, for a dry run's stand-in streams only;
# Hypercube's (the one synthetic set) could not be checked here: 100 features and 10 labels are assumed.
DIMENSIONS = {
    "Flags": (19, 7), "WaterQuality": (16, 14), "Emotions": (72, 6), "VirusGO": (749, 6), "Birds": (260, 19),
    "Yeast": (103, 14), "Scene": (294, 6), "Human": (440, 14), "Yelp": (671, 5), "Medical": (1449, 45),
    "Eukaryote": (440, 22), "Slashdot": (1079, 22), "Enron": (1001, 53), "Hypercube": (100, 10),
    "Langlog": (1004, 75), "Stackex": (585, 227), "Tmc": (500, 22), "Ohsumed": (1002, 23), "D20ng": (1006, 20),
    "Bibtex": (1836, 159), "Nuswidec": (128, 81), "Imdb": (1001, 28),
}
# A dry run's stand-in streams have the datasets' dimensions and at most DRY_INSTANCES instances, fewer for wide
# datasets: a binary-relevance learner works in proportion to features x labels per instance (Bibtex's 1,836 x 159
# take seconds per instance on one CPU core), so a stand-in holds about DRY_CELLS instance-feature-label cells, and
# never fewer than two instances. The stand-in repeats DRY_DISTINCT random instances in turn: on a stream of distinct
# random labelsets no learner ever predicts one exactly, and every ratio of subset accuracies (notebook 04's gains)
# would be 0 / 0.
DRY_INSTANCES = 200
DRY_CELLS = 10_000
DRY_DISTINCT = 2

DATA_HOW_TO = ("download the datasets' ARFF files from the KDIS multi-label repository "
               "(https://www.uco.es/kdis/mllresources/, MEKA format, one <name>.arff per dataset; MULAN files need "
               "their <name>.xml beside them) and put them in one folder, then pass data_root='<folder>' or set "
               "$PRUNEBOOK_DATA. Yeast alone also ships with river (the cpu profile uses that copy).")


def _arff_attributes(lines: Iterable[str]) -> tuple[str, list[tuple[str, list[str] | None]], int]:
    relation, attrs = "", []
    for i, raw in enumerate(lines):
        line = raw.strip()
        low = line.lower()
        if not line or line.startswith("%"):
            continue
        if low.startswith("@relation"):
            relation = line[len("@relation"):].strip()
        elif low.startswith("@attribute"):
            m = re.match(r"@attribute\s+('(?:[^']|\\')*'|\"[^\"]*\"|\S+)\s+(.*)$", line, flags=re.I)
            if not m:
                raise ValueError(f"cannot read ARFF attribute line: {line[:80]}")
            name, kind = m.group(1).strip("'\""), m.group(2).strip()
            values = None
            if kind.startswith("{"):
                values = [v.strip().strip("'\"") for v in kind.strip("{}").split(",")]
            attrs.append((name, values))
        elif low.startswith("@data"):
            return relation, attrs, i + 1
    raise ValueError("no @data section")


def _label_count_from_relation(relation: str) -> int | None:
    m = re.search(r"-C\s+(-?\d+)", relation)
    return int(m.group(1)) if m else None


def load_arff(path: str | os.PathLike, n_labels: int | None = None, name: str | None = None) -> MLStream:
    """A MEKA or MULAN multi-label ARFF file, dense or sparse, streamed in file order by river's ``iter_arff``.

    The labels are found from, in order: ``n_labels`` (positive: the first ``n_labels`` attributes; negative: the
    last ones), MEKA's ``-C n`` in the relation name (same sign convention), or a MULAN ``<stem>.xml`` beside the
    file listing the label names. Nominal features become the index of their value (a simplification); missing
    values (``?``, or absent from a sparse row) are 0."""
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()
    relation, attrs, start = _arff_attributes(lines)
    names = [a for a, _ in attrs]
    if n_labels is None:
        n_labels = _label_count_from_relation(relation)
    if n_labels is not None:
        idx = list(range(n_labels)) if n_labels > 0 else list(range(len(attrs) + n_labels, len(attrs)))
    else:
        xml = path.with_suffix(".xml")
        if not xml.is_file():
            raise ValueError(f"{path.name}: no '-C n' in the relation and no {xml.name} beside it; pass n_labels=")
        wanted = re.findall(r'<label\s+name="([^"]+)"', xml.read_text())
        idx = [names.index(w) for w in wanted]
    labels = [names[i] for i in idx]
    features = [names[i] for i in range(len(attrs)) if i not in set(idx)]
    nominal = dict(attrs)
    data = [line.strip() for line in lines[start:] if line.strip() and not line.lstrip().startswith("%")]
    sparse = bool(data) and data[0].startswith("{")

    def number(feature: str, v: object) -> float:
        # river gives numbers, or strings (nominal values, and every value of a sparse row)
        values = nominal[feature]
        if values is not None:
            return float(values.index(v)) if v in values else 0.0
        return float(v)

    X_rows, Y_rows = [], []
    for x, y in iter_arff(path, target=labels, sparse=sparse):
        X_rows.append([number(f, x[f]) if f in x else 0.0 for f in features])
        Y_rows.append([float(y[label]) == 1.0 for label in labels])
    X = np.array(X_rows, dtype=float).reshape(len(X_rows), len(features))
    Y = np.array(Y_rows, dtype=bool).reshape(len(Y_rows), len(labels))
    return MLStream(name or path.stem, X, Y, features, labels, {"file": path.name})


def find_arff(dataset: str, data_root: str | os.PathLike | None = None) -> Path:
    """The ARFF file of one of the paper's datasets, searched in ``data_root`` then ``$PRUNEBOOK_DATA`` (each folder
    itself, its ``multilabel/`` and ``<Dataset>/`` subfolders, any case); the clear prunebook error if absent."""
    stems = PAPER_DATASETS.get(dataset, [dataset.lower()])
    tried = []
    for label, folder in search_roots(data_root):
        if folder is None:
            tried.append(f"{label} (not set)")
            continue
        for sub in (folder, folder / "multilabel", folder / dataset, folder / dataset.lower()):
            if not sub.is_dir():
                continue
            by_lower = {p.name.lower(): p for p in sub.iterdir() if p.suffix.lower() == ".arff"}
            for stem in stems:
                if f"{stem}.arff" in by_lower:
                    return by_lower[f"{stem}.arff"]
        tried.append(f"{label}: {folder} (and its multilabel/, {dataset}/ subfolders): no "
                     + " or ".join(f"{s}.arff" for s in stems))
    raise missing_dataset(f"The {dataset} multi-label ARFF file", tried, DATA_HOW_TO)


def dry_instances(n_features: int, n_labels: int) -> int:
    """How many instances a dry run's stand-in stream of these dimensions has (see :data:`DRY_CELLS`)."""
    return dry_steps(DRY_INSTANCES, steps=max(DRY_STEPS, DRY_CELLS // (n_features * n_labels)))


DRY_SYNTHETIC = (200, 100)  # a dry run's synthetic streams: instances, and the drift point (a multiple of 100)


def dry_stream_length(n: int, drift_at: int) -> tuple[int, int]:
    """A synthetic stream's length and drift point: as given; in a dry run cut to :data:`DRY_SYNTHETIC`. The
    traces score the partition every 100 instances, the drift point among them."""
    return dry_steps(n, steps=DRY_SYNTHETIC[0]), dry_steps(drift_at, steps=DRY_SYNTHETIC[1])


def dry_datasets(names: Sequence[str], keep: str = "Yeast") -> list[str]:
    """The datasets a notebook runs its learners on: all of ``names``; in a dry run of the paper profile only the
    first and last (:func:`prunebook.config.dry_grid`) and ``keep`` (the one the notebooks' claims read), in order."""
    grid = dry_grid(list(names))
    return [name for name in names if name in grid or (name == keep and dry_run_requested())]


def paper_dataset(dataset: str, data_root: str | os.PathLike | None = None) -> MLStream:
    """One of the paper's 22 datasets from a local ARFF file (see :func:`find_arff`). In a dry run of the paper profile
    (and only then): a random stand-in stream with the dataset's dimensions (:data:`DIMENSIONS`), of
    :func:`dry_instances` instances, :data:`DRY_DISTINCT` random ones in turn."""
    if dry_run_requested():
        n_features, n_labels = DIMENSIONS.get(dataset, (100, 10))
        X, Y = stand_in_multilabel(DRY_DISTINCT, n_features, n_labels,
                                   seed=sorted(DIMENSIONS).index(dataset) if dataset in DIMENSIONS else 0)
        turn = np.arange(dry_instances(n_features, n_labels)) % DRY_DISTINCT
        X, Y = X[turn], Y[turn]
        return MLStream(dataset, X, Y, [f"x{j}" for j in range(n_features)], [f"Class{j}" for j in range(n_labels)],
                        {"file": "stand-in (dry run)"})
    return load_arff(find_arff(dataset, data_root), name=dataset)


def load_stream(name: str, profile: str, data_root: str | os.PathLike | None = None, seed: int = 0,
                n: int = 0) -> MLStream:
    """A stream by name: ``"Synthetic"`` (:func:`drifting_blocks`), river's Yeast at ``smoke``/``cpu``, otherwise
    the paper's ARFF file. ``n > 0`` keeps the first ``n`` instances."""
    if name == "Synthetic":
        stream = drifting_blocks(seed=seed)
    elif name == "Yeast" and profile != "paper":
        stream = yeast()
    else:
        stream = paper_dataset(name, data_root)
    return stream.head(n) if n else stream
