"""``mrl``: train, evaluate and demo Matryoshka embeddings."""

from __future__ import annotations

import typer

from mrl.cli.adapt import app as adapt_app
from mrl.cli.demo import demo
from mrl.cli.encode import encode_command
from mrl.cli.evaluate import eval_command
from mrl.cli.export import export_command
from mrl.cli.index import app as index_app
from mrl.cli.mine import mine_command
from mrl.cli.pg import app as pg_app
from mrl.cli.search import search_command
from mrl.cli.select import select_command
from mrl.cli.serve import serve_command
from mrl.cli.train import train_command

app = typer.Typer(
    name="mrl",
    help="Matryoshka embeddings, end to end: train, evaluate, pick a dimension, index, search and serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("demo")(demo)
app.command("encode")(encode_command)
app.command("mine")(mine_command)
app.command("select")(select_command)
app.add_typer(adapt_app, name="adapt")
app.add_typer(index_app, name="index")
app.add_typer(pg_app, name="pg")
app.command("search")(search_command)
app.command("serve")(serve_command)
app.command("export")(export_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
