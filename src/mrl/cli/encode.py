"""``mrl encode``: a BEIR corpus (or a split's queries) into a resumable folder of embedding shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import RuntimeOpt, ThreadsOpt, check_output, err_console, handle_errors
from mrl.errors import MrlError


@handle_errors
def encode_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Model folder, 'minilm' or 'multilingual-e5-small'.",
                                       envvar="MRL_MODEL")],
    data: Annotated[Path, typer.Option(help="BEIR folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Embeddings folder (shards + ids).")],
    what: Annotated[str, typer.Option(help="corpus, or queries (those judged in --split).")] = "corpus",
    split: Annotated[str, typer.Option(help="qrels split whose queries --what queries encodes.")] = "test",
    shard_size: Annotated[int, typer.Option(help="Texts per shard.", min=1)] = 10_000,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.", min=1)] = 64,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present; under torchrun "
                                                    "cuda:LOCAL_RANK).")] = None,
    runtime: RuntimeOpt = "torch",
    threads: ThreadsOpt = None,
) -> None:
    """Encode at full dimension into shards; run again to resume; under torchrun each rank takes a share.

    `mrl index build --vectors OUT` reads the folder.
    """
    from mrl.data.beir import load_beir, load_corpus
    from mrl.encoders.model import pick_device, resolve_model_path
    from mrl.encoders.shards import encode_shards

    if what not in ("corpus", "queries"):
        raise MrlError(f"--what {what!r}: expected corpus or queries")
    check_output(out, "folder", "--out")
    if device is not None:
        pick_device(device)
    resolve_model_path(model)  # a missing model folder is named before the data is read
    if what == "corpus":
        texts_by_id = load_corpus(data)
        source = f"{data}:corpus"
    else:
        texts_by_id = load_beir(data, split).queries
        source = f"{data}:queries-{split}"
    written, skipped, complete = encode_shards(model, list(texts_by_id.values()), list(texts_by_id), out,
                                               source, shard_size, batch_size, device, say=err_console.print,
                                               kind="document" if what == "corpus" else "query", runtime=runtime,
                                               threads=threads)
    state = "complete" if complete else "waiting for the other ranks' shards"
    err_console.print(f"{out}: {written} shard(s) written, {skipped} already there; {state}")
