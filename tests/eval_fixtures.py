"""Small files in the public formats of HellaSwag, LAMBADA and finetune.py's responses.jsonl,
written by the tests themselves (the real sets are never in the repo)."""

import json
from pathlib import Path

HELLASWAG = [
    ("A man is sitting on a roof. He", ["starts pulling up roofing on a roof.", "is holding a cube.",
                                        "eats the ladder slowly.", "is using wrap to wrap a pair of skis."], 0),
    ("The woman pours flour into a bowl. She", ["adds two eggs and stirs the mixture.", "sings to the moon.",
                                                "drives the bowl to work.", "paints the flour blue."], 0),
    ("Two kids run onto the beach. They", ["build a large sand castle near the water.", "file their taxes.",
                                           "melt into the sand.", "read the newspaper upside down."], 0),
    ("A chef sharpens a knife. The chef", ["slices the onions into thin rings.", "throws the knife into space.",
                                           "asks the knife for advice.", "folds the knife like paper."], 1),
    ("The dog sees a ball. The dog", ["runs after the ball and brings it back.", "writes a letter.",
                                      "becomes a cat.", "ignores gravity."], 2),
    ("Rain falls on the city. People", ["open their umbrellas and walk faster.", "turn into fish.",
                                        "sell the clouds.", "stop existing."], 3),
]

LAMBADA = [
    "He looked at the clock on the wall and realized he was late for his meeting with the",
    "She opened the door of the old house and a cold wind blew through the dark",
    "The children waited all year for the snow, and when it finally came they ran out to play in the snow",
    "After the long trip across the sea, the sailors were glad to finally see the land",
    " ".join(["It was a long story about a small village by the river."] * 8) + " At last they reached the river",
    "I asked him what he wanted for dinner and he said he wanted pizza",
    "The cat jumped onto the table and knocked over the glass of milk",
]


def write_hellaswag(path: Path, n: int | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, (ctx, endings, label) in enumerate(HELLASWAG[:n]):
            head, _, tail = ctx.rpartition(". ")
            fh.write(json.dumps({"ind": 100 + i, "activity_label": "test", "ctx_a": head + ".", "ctx_b": tail,
                                 "ctx": ctx, "split": "val", "split_type": "indomain", "label": label,
                                 "endings": endings, "source_id": f"test~{i}"}) + "\n")
    return path


def write_lambada(path: Path, n: int | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for text in LAMBADA[:n]:
            fh.write(json.dumps({"text": text}) + "\n")
    return path


def write_text(path: Path) -> Path:
    path.write_text("Every effort moves you forward, said the painter, though the canvas was blank.\n"
                    "The verdict came quickly; nobody in the gallery was surprised. " * 4, encoding="utf-8")
    return path


def write_responses(path: Path, n: int = 5) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else f"{i}+{i}",
                                 "output": str(2 * i), "response": str(2 * i if i % 3 else i)}) + "\n")
    return path
