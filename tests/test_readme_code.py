"""The READMEs' code blocks run as written, as doctests do, on tiny random weights.

Every fenced ```python block and every ```bash / ```sh / ```console block is either run here or marked just
before its fence with ``<!-- not run: why -->`` (a GPU, the network, the real checkpoint, a long training run, a
server that runs until stopped). Python blocks run in order in one fresh namespace per README, so a later
block may use what an earlier one made (``tts``, ``voice``); shell blocks run each ``vallex`` command through
the CLI in this process. Both run in a folder holding the files the snippets name (``me.wav``, ``story.txt``...)
with ``$VALLEX_WEIGHTS_DIR`` on the tiny weights, so ``VallEX.from_pretrained()`` loads them. A marked block's
``vallex`` commands are still parsed, so that a renamed option cannot hide in one.
"""
from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vallex.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
READMES = ("README.md", "vallex/evaluation/README.md", "vallex/text/README.md", "vallex/training/README.md",
           "vallex/s2st/README.md", "demo/README.md", "notebooks/README.md", "bench/README.md")
PYTHON = frozenset({"python", "py"})
SHELL = frozenset({"bash", "sh", "shell", "console"})
NOT_RUN = re.compile(r"^<!--\s*not run:(.*?)-->$")
# A block without a language that holds commands must say it is shell, and so be run or marked.
LOOKS_LIKE_A_COMMAND = re.compile(r"^(\$ )?(vallex|python|\.venv/bin/|make|pip|curl|torchrun)\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its text, and why it is not run (None: it runs)."""

    readme: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None

    @property
    def where(self) -> str:
        return f"{self.readme}:{self.line}"


def read_blocks(readme: str) -> list[Block]:
    """The fenced blocks of ``readme``, each with the ``not run`` mark of the line before its fence.

    Raises:
        AssertionError: a ``not run`` mark that no fence follows.
    """
    lines = (REPO / readme).read_text(encoding="utf-8").splitlines()
    blocks, mark, index = [], None, 0
    while index < len(lines):
        line = lines[index].strip()
        if line.startswith("```"):
            end = next(j for j in range(index + 1, len(lines)) if lines[j].strip().startswith("```"))
            blocks.append(Block(readme, index + 1, line[3:].strip().lower(), "\n".join(lines[index + 1:end]) + "\n",
                                mark))
            mark, index = None, end + 1
            continue
        assert mark is None, f"{readme}:{index}: a <!-- not run: ... --> mark must be just before a code fence"
        found = NOT_RUN.match(line)
        mark = found.group(1).strip() if found else None
        index += 1
    assert mark is None, f"{readme}: a <!-- not run: ... --> mark at the end, before no code fence"
    return blocks


def shell_commands(code: str) -> list[tuple[dict[str, str], list[str]]]:
    """``(environment assignments, argv)`` of each command of a shell block (``\\`` continuations joined,
    comments and a console's ``$ `` prompt dropped)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line.removeprefix("$ "), comments=True)
        env = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if words:
            commands.append((env, words))
    return commands


def vallex_argv(argv: list[str]) -> list[str] | None:
    """The CLI arguments of a ``vallex`` command (also ``.venv/bin/vallex``, ``python -m vallex``), else None."""
    if Path(argv[0]).name == "vallex":
        return argv[1:]
    if "-m" in argv and argv.index("-m") + 1 < len(argv) and argv[argv.index("-m") + 1] == "vallex":
        return argv[argv.index("-m") + 2:]
    return None


ALL_BLOCKS = [block for readme in READMES for block in read_blocks(readme)]


def _runs(language: set[str] | frozenset[str]) -> list[str]:
    return [readme for readme in READMES
            if any(b.readme == readme and b.language in language and b.not_run is None for b in ALL_BLOCKS)]


@pytest.mark.parametrize("readme", READMES)
def test_every_code_block_runs_or_says_why_not(readme):
    blocks = [block for block in ALL_BLOCKS if block.readme == readme]
    for block in blocks:
        code = block.language in PYTHON | SHELL
        if not block.language:
            assert not any(LOOKS_LIKE_A_COMMAND.match(line.strip()) for line in block.code.splitlines()), (
                f"{block.where}: a block of commands needs a language (```bash), so that it is run or marked")
        if block.not_run is not None:
            assert code, f"{block.where}: only code blocks are run, so only they are marked 'not run'"
            assert len(block.not_run) >= 10, f"{block.where}: say why the block is not run"
        if code and block.not_run is None and block.language in SHELL:
            for _, argv in shell_commands(block.code):
                assert vallex_argv(argv) is not None, (
                    f"{block.where}: {argv[0]!r} is not a vallex command; run it here or mark the block not run")


def test_the_main_readme_runs_most_of_its_api_code():
    """The counts, so that marking blocks 'not run' cannot quietly become the rule for the library's own API."""
    main_readme = [b for b in ALL_BLOCKS if b.readme == "README.md" and b.language in PYTHON | SHELL]
    run = [b for b in main_readme if b.not_run is None]
    assert len([b for b in run if b.language in PYTHON]) >= 4 and len([b for b in run if b.language in SHELL]) >= 1
    assert len(main_readme) == len(run) + len([b for b in main_readme if b.not_run])


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.language in SHELL and b.not_run is not None],
                         ids=lambda block: block.where)
def test_a_marked_blocks_vallex_commands_still_parse(block):
    """What cannot run here still names real commands and options (argparse alone: nothing loads or listens)."""
    parser = build_parser()
    for _, argv in shell_commands(block.code):
        arguments = vallex_argv(argv)
        if arguments is not None:
            parser.parse_args(arguments)


@pytest.fixture
def workspace(tmp_path, tiny_weights, monkeypatch) -> Path:
    """A folder with the files the snippets name, as the current directory, the weights on the tiny ones."""
    voices = REPO / "assets"
    for name, asset in (("me.wav", "en_ada.ogg"), ("take1.wav", "en_ben.ogg"), ("take2.wav", "en_ada.ogg")):
        audio, rate = sf.read(voices / asset, dtype="float32")
        sf.write(tmp_path / name, audio, rate)
    (tmp_path / "story.txt").write_text("Once upon a time there was a voice. It spoke.", encoding="utf-8")
    for name in ("vallex-checkpoint.pt", "vallex-config.json"):  # for convert-checkpoint
        shutil.copy(tiny_weights / name, tmp_path / name)
    (tmp_path / "weights").symlink_to(tiny_weights, target_is_directory=True)
    # Training data, as vallex/training/README.md lays it out: audio + same-name .txt, and a recording list.
    (tmp_path / "data" / "en").mkdir(parents=True)
    t = np.arange(24000) / 24000
    sf.write(tmp_path / "data" / "en" / "0001.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000)
    (tmp_path / "data" / "en" / "0001.txt").write_text("Hello there.", encoding="utf-8")
    (tmp_path / "train.csv").write_text("path,text,language\ndata/en/0001.wav,Hello there.,en\n", encoding="utf-8")
    monkeypatch.setenv("VALLEX_WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("VALLEX_PRESETS_DIR", str(tmp_path / "presets"))
    monkeypatch.setenv("VALLEX_DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("readme", _runs(PYTHON))
def test_python_blocks_run(readme, workspace):
    namespace: dict = {"__name__": "__readme__"}
    for block in ALL_BLOCKS:
        if block.readme == readme and block.language in PYTHON and block.not_run is None:
            exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102  (the README's own code)


@pytest.mark.parametrize("readme", _runs(SHELL))
def test_shell_blocks_run(readme, workspace, monkeypatch, capsys):
    for block in ALL_BLOCKS:
        if block.readme == readme and block.language in SHELL and block.not_run is None:
            for env, argv in shell_commands(block.code):
                for name, value in env.items():
                    monkeypatch.setenv(name, value)
                code = main(vallex_argv(argv))
                assert code == 0, f"{block.where}: {shlex.join(argv)} exited {code}: {capsys.readouterr().err}"
