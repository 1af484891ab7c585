"""Where a pretraining corpus comes from: files (text, JSON Lines, parquet) or a hub dataset.

A source is cut into *units* of work that processes can read independently and in any order
(``data/prepare.py`` hands them to a process pool), and each unit yields its documents as
``(text, ends_document)`` pieces:

- text files (``.txt`` and any other name that is not a known binary format): one document
  per file, as ``data=text`` reads them. A big file is cut into byte ranges just before a
  newline followed by a printable ASCII character, where GPT-2's pre-tokenizer splits anyway
  (see ``token_cache``), so the pieces tokenize to the ids of the whole file.
- JSON Lines (``.jsonl``, ``.ndjson``, ``.json`` with one object per line, ``.jsonl.gz``):
  one document per line, its ``text_column`` field; big files are cut at line ends.
  Read with the standard ``json`` module, line by line (memory stays flat).
- parquet (``.parquet``): one document per row of ``text_column``, read with pyarrow, a unit
  being a run of row groups (FineWeb's files hold many).
- a Hugging Face dataset by name through ``datasets.load_dataset`` (streaming or not): a unit
  is a contiguous index range (an Arrow table on disk) or, streaming, one of its shards.

A file in another known format (CSV, Arrow, zstd, zip, ...) or a binary file is refused with
one line naming its format: it is never tokenized as text. Hand-written here: only the
splitting into units and the text-file byte ranges; the formats are read by pyarrow, json,
gzip and datasets.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gpt_lightning.data.token_cache import expand_paths
from gpt_lightning.errors import ConfigError

UNIT_BYTES = 16 << 20  # a unit of work reads about this much (a process holds its ids in memory)
READ_BYTES = 1 << 20  # text files are read in blocks of this size
SNIFF_BYTES = 4096  # bytes looked at to tell a binary file

TEXT, JSONL, JSONL_GZ, PARQUET, HUB = "text", "jsonl", "jsonl.gz", "parquet", "hub"
_SUFFIXES = {".jsonl": JSONL, ".ndjson": JSONL, ".json": JSONL, ".parquet": PARQUET}
# formats a user may well point data.path at, that are not supported: refused by name
REFUSED = {
    ".csv": "CSV", ".tsv": "TSV", ".arrow": "Arrow IPC", ".feather": "Feather", ".orc": "ORC",
    ".avro": "Avro", ".zst": "zstd-compressed", ".zstd": "zstd-compressed", ".bz2": "bzip2-compressed",
    ".xz": "xz-compressed", ".lz4": "lz4-compressed", ".gz": "gzip-compressed", ".zip": "zip archive",
    ".tar": "tar archive", ".tgz": "tar archive", ".7z": "7z archive", ".pdf": "PDF", ".npy": "NumPy array",
    ".npz": "NumPy archive", ".bin": "binary", ".pt": "PyTorch", ".safetensors": "safetensors",
    ".pkl": "pickle", ".h5": "HDF5", ".xlsx": "Excel", ".docx": "Word", ".epub": "EPUB",
}
_MAGIC = {b"PAR1": "parquet", b"\x28\xb5\x2f\xfd": "zstd-compressed", b"\x1f\x8b": "gzip-compressed",
          b"PK\x03\x04": "zip archive", b"ARROW1": "Arrow IPC", b"%PDF": "PDF", b"\x93NUMPY": "NumPy array"}


@dataclass(frozen=True)
class Unit:
    """One independent piece of work: ``kind`` from ``path`` (or the hub), ``start``..``stop``
    (bytes for text and JSON Lines, row groups for parquet, rows or shards for the hub)."""

    index: int
    kind: str
    path: str
    start: int
    stop: int


@dataclass(frozen=True)
class HubSpec:
    """``datasets.load_dataset(name, config, split=split, streaming=streaming, data_files=...)``."""

    name: str
    config: str | None = None
    split: str = "train"
    streaming: bool = False
    data_files: str | list | None = None
    revision: str | None = None

    def load(self):
        try:
            import datasets
        except ImportError:
            raise ConfigError("data.hub needs the `datasets` library: pip install datasets") from None
        kwargs = {"split": self.split, "streaming": self.streaming}
        if self.data_files is not None:
            kwargs["data_files"] = self.data_files
        if self.revision is not None:
            kwargs["revision"] = self.revision
        try:
            return datasets.load_dataset(self.name, self.config, **kwargs)
        except Exception as err:  # hub, network and builder errors: one line
            msg = " ".join(str(err).split())[:300]
            raise ConfigError(f"data.hub={self.name!r} cannot be loaded ({type(err).__name__}: {msg}); check the "
                              "name, data.hub_config and data.split, and the network or HF_HUB_OFFLINE") from None


# ---- files ----------------------------------------------------------------------------------------
def file_kind(path: Path) -> str:
    """TEXT, JSONL, JSONL_GZ or PARQUET, or a ConfigError naming the format of a refused file."""
    name = path.name.lower()
    if name.endswith((".jsonl.gz", ".ndjson.gz", ".json.gz")):
        return JSONL_GZ
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        kind = _SUFFIXES[suffix]
        if kind == PARQUET:
            _need_pyarrow()
        return kind
    if suffix in REFUSED:
        raise _refuse(path, REFUSED[suffix])
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            if fmt == "parquet":
                raise ConfigError(f"{path} is a parquet file without the .parquet suffix; rename it to *.parquet")
            raise _refuse(path, fmt)
    if b"\0" in head:
        raise _refuse(path, "binary (it has NUL bytes)")
    return TEXT


def _refuse(path: Path, fmt: str) -> ConfigError:
    return ConfigError(f"{path} is {fmt}, a format data=corpus does not read; give text (.txt), JSON Lines "
                       "(.jsonl, .jsonl.gz) or parquet (.parquet) files, or remove it from data.path")


def _need_pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("parquet files need pyarrow: pip install pyarrow") from None
    return pq


def file_identity(files: list[Path]) -> list[dict]:
    """What identifies the files without reading them: path, size, modification time."""
    out = []
    for path in files:
        st = path.stat()
        out.append({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_files(path) -> list[Path]:
    """data.path as files, each checked to be a format that is read (one line for any other)."""
    files = expand_paths(path)
    for f in files:
        file_kind(f)
    return files


def file_units(files: list[Path], unit_bytes: int | None = None) -> list[Unit]:
    unit_bytes = unit_bytes or UNIT_BYTES
    units: list[Unit] = []
    for path in files:
        kind = file_kind(path)
        size = path.stat().st_size
        if kind == PARQUET:
            pq = _need_pyarrow()
            meta = pq.ParquetFile(path).metadata
            start, acc = 0, 0
            for rg in range(meta.num_row_groups):
                acc += meta.row_group(rg).total_byte_size
                if acc >= unit_bytes or rg == meta.num_row_groups - 1:
                    units.append(Unit(len(units), kind, str(path), start, rg + 1))
                    start, acc = rg + 1, 0
        elif kind == JSONL_GZ or size <= unit_bytes:
            units.append(Unit(len(units), kind, str(path), 0, size))
        else:
            cuts = [0] + [_cut_at(path, off, kind) for off in range(unit_bytes, size, unit_bytes)] + [size]
            cuts = sorted(set(cuts))
            for a, b in zip(cuts, cuts[1:]):
                units.append(Unit(len(units), kind, str(path), a, b))
    return units


def _cut_at(path: Path, offset: int, kind: str) -> int:
    """The first safe cut at or after ``offset``: after a newline for JSON Lines; for text,
    at a newline followed by a printable ASCII character (never inside a UTF-8 character)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        pos = offset
        while True:
            block = fh.read(READ_BYTES)
            if not block:
                return path.stat().st_size
            i = 0
            while True:
                j = block.find(b"\n", i)
                if j < 0 or j + 1 >= len(block):
                    break
                if kind == JSONL:
                    return pos + j + 1
                if 0x21 <= block[j + 1] <= 0x7E:
                    return pos + j  # the piece after the cut starts with the newline
                i = j + 1
            pos += len(block) - 1  # re-read the last byte: its follower decides
            fh.seek(pos)


# ---- reading a unit ---------------------------------------------------------------------------------
def read_unit(unit: Unit, text_column: str, hub: HubSpec | None = None) -> Iterator[tuple[str, bool]]:
    """The unit's text as ``(piece, ends_document)``."""
    if unit.kind == TEXT:
        yield from _text_pieces(unit)
    elif unit.kind in (JSONL, JSONL_GZ):
        for text in _jsonl_docs(unit, text_column):
            yield text, True
    elif unit.kind == PARQUET:
        for text in _parquet_docs(unit, text_column):
            yield text, True
    else:
        for text in _hub_docs(unit, text_column, hub):
            yield text, True


def _text_pieces(unit: Unit) -> Iterator[tuple[str, bool]]:
    from gpt_lightning.data.token_cache import _split_safely

    path, size = Path(unit.path), os.path.getsize(unit.path)
    last = unit.stop >= size  # this unit ends the file, so the document
    carry, offset = "", unit.start
    with open(path, "rb") as fh:
        fh.seek(unit.start)
        while offset < unit.stop:
            raw = fh.read(min(READ_BYTES, unit.stop - offset))
            if not raw:
                break
            offset += len(raw)
            chunk = raw
            # a block may end inside a UTF-8 character: keep its lead bytes for the next block
            cut = _utf8_tail(chunk) if offset < unit.stop else 0
            if cut:
                fh.seek(offset - cut)
                offset -= cut
                chunk = chunk[:-cut]
            try:
                text = carry + chunk.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(f"{path} is not UTF-8 text (bad byte near offset {offset - len(chunk) + err.start}); "
                                  "convert it to UTF-8 or remove it from data.path") from None
            pieces, carry = _split_safely(text, offset >= unit.stop)
            for piece in pieces:
                yield piece, False
    if carry:
        yield carry, False
    if last:
        yield "", True


def _utf8_tail(raw: bytes) -> int:
    """How many bytes at the end of ``raw`` start a UTF-8 character that is not complete."""
    for back in range(1, min(4, len(raw)) + 1):
        b = raw[-back]
        if b & 0xC0 != 0x80:  # a lead byte (or ASCII)
            need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
            return back if need > back else 0
    return 0


def _jsonl_docs(unit: Unit, column: str) -> Iterator[str]:
    opener = gzip.open if unit.kind == JSONL_GZ else open
    with opener(unit.path, "rb") as fh:
        if unit.kind == JSONL:
            fh.seek(unit.start)
        pos, lineno = unit.start, 0
        for line in fh:
            if unit.kind == JSONL and pos >= unit.stop:
                break
            pos += len(line)
            lineno += 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                where = f"line {lineno}" if unit.start == 0 else f"byte {pos - len(line)}"
                raise ConfigError(f"{unit.path} is not JSON Lines ({where} is not one JSON object); give one "
                                  "object per line, e.g. {\"text\": \"...\"}") from None
            if not isinstance(record, dict) or column not in record:
                keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
                raise ConfigError(f"data.text_column={column!r} is invalid: {unit.path} has records without it "
                                  f"(keys: {keys}); set data.text_column to the field that holds the text")
            text = record[column]
            if not isinstance(text, str):
                raise ConfigError(f"data.text_column={column!r} is invalid: in {unit.path} it holds "
                                  f"{type(text).__name__}, not text")
            yield text


def _parquet_docs(unit: Unit, column: str) -> Iterator[str]:
    pq = _need_pyarrow()
    pf = pq.ParquetFile(unit.path)
    if column not in pf.schema_arrow.names:
        raise ConfigError(f"data.text_column={column!r} is invalid: {unit.path} has the columns "
                          f"{pf.schema_arrow.names[:12]}; set data.text_column to the one that holds the text")
    for batch in pf.iter_batches(batch_size=1024, row_groups=range(unit.start, unit.stop), columns=[column]):
        for text in batch.column(0).to_pylist():
            yield text or ""


# ---- a hub dataset ------------------------------------------------------------------------------------
_HUB_CACHE: dict = {}


def _hub_dataset(hub: HubSpec):
    if hub not in _HUB_CACHE:  # once per process: the pool's workers open it themselves
        _HUB_CACHE[hub] = hub.load()
    return _HUB_CACHE[hub]


def hub_units(hub: HubSpec, docs_per_unit: int = 20_000) -> list[Unit]:
    ds = _hub_dataset(hub)
    if hub.streaming:
        n = int(getattr(ds, "num_shards", None) or getattr(ds, "n_shards", 1) or 1)
        return [Unit(i, HUB, hub.name, i, n) for i in range(n)]
    rows = len(ds)
    return [Unit(i, HUB, hub.name, a, min(a + docs_per_unit, rows))
            for i, a in enumerate(range(0, rows, docs_per_unit))]


def _hub_docs(unit: Unit, column: str, hub: HubSpec) -> Iterator[str]:
    ds = _hub_dataset(hub)
    names = list(ds.column_names or []) if getattr(ds, "column_names", None) is not None else None
    if names is not None and column not in names:
        raise ConfigError(f"data.text_column={column!r} is invalid: {hub.name} has the columns {names[:12]}; "
                          "set data.text_column to the one that holds the text")
    if hub.streaming:
        part = ds.shard(num_shards=unit.stop, index=unit.start) if unit.stop > 1 else ds
        for record in part:
            yield record[column] or ""
        return
    for a in range(unit.start, unit.stop, 1024):
        for text in ds[a:min(a + 1024, unit.stop)][column]:
            yield text or ""
