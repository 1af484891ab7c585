"""The SMS Spam Collection (UCI 228), the data set of "LLMs from scratch" chapter 6.

The book downloads UCI's zip; it holds ``SMSSpamCollection``, one message per line as
``label<TAB>text`` (labels ``ham``/``spam``, no header row). The zip is fetched like every
public file (``download.fetch``: ``$GPT_LIGHTNING_DATA_DIR``, the cache, then the URL, checked
against the sha256 pinned below) and the TSV is extracted once beside it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from gpt_lightning.atomic import atomic_write
from gpt_lightning.download import Source, cache_dir, fetch
from gpt_lightning.errors import ConfigError

MEMBER = "SMSSpamCollection"  # the TSV inside the zip
# name -> (zip file name, where it comes from and what it hashes to)
DATASETS: dict[str, tuple[str, Source]] = {
    "sms_spam": ("sms_spam_collection.zip", Source(
        "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        "1587ea43e58e82b14ff1f5425c88e17f8496bfcdb67a583dbff9eefaf9963ce3")),
}


def fetch_sms_spam(name: str = "sms_spam") -> Path:
    """The extracted ``SMSSpamCollection.tsv`` (downloaded and verified on first use)."""
    zip_name, source = DATASETS[name]
    archive = fetch(zip_name, source, key="data.path")
    tsv = archive.with_name(f"{archive.stem}.{MEMBER}.tsv")
    if tsv.is_file() and tsv.stat().st_mtime >= archive.stat().st_mtime:
        return tsv
    try:
        with zipfile.ZipFile(archive) as zf:
            data = zf.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ConfigError(f"{archive}: not the SMS Spam Collection zip ({err}); delete it and run again") from None
    if not os.access(tsv.parent, os.W_OK):  # a read-only $GPT_LIGHTNING_DATA_DIR: extract into the cache
        tsv = cache_dir() / "data" / tsv.name
        tsv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(tsv, lambda tmp: Path(tmp).write_bytes(data))
    return tsv
