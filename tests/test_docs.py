"""The docs are tested: the README's curl commands run, links and anchors resolve, `make X` targets exist.

A newcomer copies the README's commands into a shell. Each `curl` line of its ```sh blocks is run here, in
order, against a real server started with the committed weights (the README's `localhost:8000` rewritten to
its loopback port), from a folder laid out like a fresh clone's (`docs/7.png` there), and its answer is held to
what the endpoint gives: status, content type and size. A link in README.md or docs/*.md must name a file that
exists and, after `#`, a heading of it by GitHub's anchor rules; a `make X` named in them must be a Makefile
target. The byte layouts of docs/formats.md are checked against their source, `app/codec/latent.py`'s docstring.
"""

import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app.codec.container
import app.codec.latent
from tests.conftest import uvicorn_server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 250
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
CURL = shutil.which("curl")


# ---------------------------------------------------------------- markdown reading


@dataclass
class Line:
    text: str
    block: int | None  # which fenced code block the line is in, None outside one
    info: str = ""  # that block's info string (`sh`)


def fenced(text: str) -> Iterator[Line]:
    """Each line, and the fenced code block it is in, by CommonMark's rules for fences."""
    fence: str | None = None
    blocks, info = 0, ""
    for line in text.splitlines():
        if fence is None:
            opened = FENCE.match(line)
            if opened and not (opened.group(1)[0] == "`" and "`" in opened.group(2)):
                fence, info, blocks = opened.group(1), opened.group(2).strip(), blocks + 1
                continue
            yield Line(line, None)
        elif re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", line):
            fence = None
        else:
            yield Line(line, blocks, info)


def code_blocks(text: str) -> Iterator[tuple[str, list[str]]]:
    """(info string, lines) of each fenced code block."""
    blocks: dict[int, tuple[str, list[str]]] = {}
    for line in fenced(text):
        if line.block is not None:
            blocks.setdefault(line.block, (line.info, []))[1].append(line.text)
    yield from blocks.values()


def prose_lines(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks, inline code spans removed."""
    for line in fenced(text):
        if line.block is None:
            yield re.sub(r"(`+).+?\1", "", line.text)


def inline_code(text: str) -> Iterator[str]:
    for line in fenced(text):
        if line.block is None:
            yield from (span.strip() for _, span in re.findall(r"(`+)(.+?)\1", line.text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays, its target goes
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in fenced(path.read_text()):
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line.text)
        if heading and line.block is None:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """Every link target ([text](target), images too) outside code."""
    targets = []
    for line in prose_lines(path.read_text()):
        targets += re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)
    return targets


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{path.name}: {target}: no file {os.path.relpath(resolved, ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{path.name}: {target}: no heading with anchor #{anchor} in {resolved.name}")
        elif anchor and resolved.suffix != ".md":
            problems.append(f"{path.name}: {target}: an anchor into a file that is not markdown")
    return problems


# ---------------------------------------------------------------- make targets


def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.-][A-Za-z0-9_. -]*):(?![:=])", line)
        if rule:
            targets |= set(rule.group(1).split())
    return targets - {".PHONY", ".DEFAULT_GOAL"}


MAKE_CALL = re.compile(r"(?:^|[;&|(]\s*|\$\s+)make\s+((?:[A-Za-z][\w.-]*\s*)+)")


def named_make_targets(text: str) -> set[str]:
    """The X of every `make X` in a code span or a command line of a code block (prose's "make" is not one)."""
    commands = list(inline_code(text))
    for _, body in code_blocks(text):
        commands += [line.split("#", 1)[0] for line in body]
    named = set()
    for command in commands:
        for match in MAKE_CALL.finditer(command.strip()):
            named |= {word for word in match.group(1).split() if "=" not in word}
    return named


# ---------------------------------------------------------------- the README's curl commands


@dataclass
class Answer:
    status: int
    content_type: str
    size: int
    model_id: str  # the X-Model-Id header, empty when there is none


def complete(command: str) -> bool:
    """Whether a shell command's quotes are all closed."""
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's ```sh blocks that hold curl, continuation lines joined, in order."""
    commands = []
    for info, body in code_blocks(text):
        joined = "\n".join(body).replace("\\\n", " ")
        lines: list[str] = []
        pending = ""
        for line in joined.splitlines():
            pending = f"{pending}\n{line}" if pending else line
            if complete(pending):  # a quoted string may span lines (python -c '...')
                if pending.strip() and not pending.lstrip().startswith("#"):
                    lines.append(pending)
                pending = ""
        assert not pending, f"an unfinished command in a code block: {pending!r}"
        if any(re.search(r"(^|\s)curl\s", line) for line in lines):
            assert info in ("sh", "bash"), f"curl commands go in ```sh blocks (so they are tested): {lines[0]}"
            commands += lines
    return commands


def curl_wrapper(folder: Path) -> Path:
    """A `curl` first on PATH: the real one, quiet but for errors, writing each answer's status line to stderr."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "curl"
    wrapper.write_text(
        f"#!/bin/sh\nexec {CURL} -sS -w '%{{stderr}}@@ %{{http_code}} %{{content_type}} %{{size_download}} %header{{x-model-id}}\\n' \"$@\"\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def output_file(command: str) -> str | None:
    found = re.search(r"\s-o\s+(\S+)", command)
    return found.group(1) if found else None


def check_answer(command: str, answer: Answer, stdout: str, cwd: Path) -> None:
    """What each endpoint gives, as the README says it: a 24-byte latent, a 28x28 PNG, JSON..."""
    path = re.search(r"127\.0\.0\.1:\d+(/[a-z/]*)", command)
    assert path, f"no URL of the server in {command!r}"
    endpoint = path.group(1)
    assert answer.status == 200, f"{command!r} answered {answer.status}"
    said = re.search(r"#.*?\b(\d+) bytes", command)  # the README's own comment: "# 24 bytes", "# 48 bytes"
    if said:
        assert answer.size == int(said.group(1)), f"{command!r} gave {answer.size} bytes"
    if endpoint in ("/encode", "/decode", "/encode/batch", "/decode/batch"):
        # The model that answered: the one the command names (?model=, or the comment's "by NAME"), else the default;
        # a model id named (?model=ID, an X-Model-Id header written out, the comment's "by ID"): exactly that version.
        named = re.search(r"[?&]model=(\w+)", command) or re.search(r"#.*\bby (mlp6|mlp24|ec64)\b", command)
        model = named.group(1) if named else "mlp6"
        assert answer.model_id.startswith(f"{model}-"), f"{command!r} was answered by {answer.model_id!r}"
        version = r"((?:mlp6|mlp24|ec64)-[0-9a-f]{12})\b"
        for exact in (rf"[?&]model={version}", rf"X-Model-Id: {version}", rf"#.*\bby {version}"):
            found = re.search(exact, command, re.I)
            if found:
                assert answer.model_id == found.group(1), f"{command!r} was answered by {answer.model_id!r}"
    out = output_file(command.split("#", 1)[0])
    body = (cwd / out).read_bytes() if out else stdout.encode()
    if endpoint == "/encode":
        assert answer.content_type == "application/octet-stream", command
        assert len(body) == 24, f"{command!r} gave {len(body)} bytes, not a 24-byte latent"
    elif endpoint == "/encode/batch":
        if "application/x-mnist-latents" in command:
            assert answer.content_type == "application/x-mnist-latents", command
            assert body[:8] == b"MNISTLAT", command
        else:
            assert answer.content_type == "application/octet-stream", command
            assert len(body) % 24 == 0 and body, f"{command!r} gave {len(body)} bytes, not N x 24"
    elif endpoint == "/decode":
        assert answer.content_type == "image/png", command
        image = Image.open(io.BytesIO(body))
        assert (image.format, image.size, image.mode) == ("PNG", (28, 28), "L"), command
    elif endpoint == "/decode/batch":
        assert answer.content_type == "application/x-npy", command
        array = np.load(io.BytesIO(body))
        assert array.dtype == np.uint8 and array.shape[1:] == (28, 28) and len(array), command
    elif endpoint in ("/models", "/healthz", "/readyz"):
        assert answer.content_type == "application/json", command
        if not out and "|" not in command:
            json.loads(body)
    else:
        raise AssertionError(f"no expectation written for {endpoint} ({command!r}): add it to check_answer")


def run_readme_commands(text: str, url: str, folder: Path) -> list[str]:
    """Run the README's curl blocks in `folder`; the commands run, in order."""
    cwd = folder / "clone"
    (cwd / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "7.png", cwd / "docs" / "7.png")  # what a fresh clone has at that path
    env = {**os.environ, "PATH": f"{curl_wrapper(folder)}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    host = url.removeprefix("http://")
    ran = []
    for line in readme_commands(text):
        command = re.sub(r"(https?://)?localhost:8000", host, line)
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{line!r} failed ({done.returncode}):\n{done.stderr}"
        found = re.findall(r"^@@ (\d+) (\S*) (\d+) ?(\S*)$", done.stderr, re.M)
        answers = [Answer(int(status), kind, int(size), model_id) for status, kind, size, model_id in found]
        assert len(answers) == line.count("curl "), f"{line!r}: {done.stderr}"
        for answer in answers:
            check_answer(command, answer, done.stdout, cwd)
        ran.append(line)
    return ran


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with uvicorn_server(tmp_path_factory.mktemp("docs-server")) as running:
        yield running.url


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize("path", [path for path in DOCS if readme_commands(path.read_text())], ids=lambda p: p.name)
def test_every_curl_command_of_the_docs_pages_works(path: Path, server: str, tmp_path: Path) -> None:
    """The pages of docs/ run the same way (each from a fresh folder of its own)."""
    assert run_readme_commands(path.read_text(), server, tmp_path)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_every_curl_command_of_the_readme_works(server: str, tmp_path: Path) -> None:
    ran = run_readme_commands(README.read_text(), server, tmp_path)
    # The README shows each model and an effort: a newcomer can try them all from it.
    shown = " ".join(ran)
    assert re.search(r"/encode\s", shown) or re.search(r"/encode -", shown), "an /encode with the default model"
    for model in ("mlp24", "ec64"):
        assert f"/encode?model={model}" in shown and f"/decode?model={model}" in shown, model
    assert "effort=" in shown


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_a_curl_command_that_stopped_working_fails(server: str, tmp_path: Path) -> None:
    broken = "```sh\ncurl -F img=@docs/7.png localhost:8000/encode?model=nosuch -o 7.lat   # 24 bytes\n```\n"
    with pytest.raises(AssertionError, match="answered 404"):
        run_readme_commands(broken, server, tmp_path)
    missing = "```sh\ncurl -F img=@docs/8.png localhost:8000/encode -o 8.lat\n```\n"
    with pytest.raises(AssertionError, match="failed"):
        run_readme_commands(missing, server, tmp_path / "again")
    # ec64 has two versions: bare latents decoded by the name are refused; a comment's version is held to
    bare = (
        "```sh\ncurl -F img=@docs/7.png 'localhost:8000/encode?model=ec64' -o 7.ac\n"
        "curl --data-binary @7.ac 'localhost:8000/decode?model=ec64' -o 7.png\n```\n"
    )
    with pytest.raises(AssertionError, match="answered 409"):
        run_readme_commands(bare, server, tmp_path / "bare")
    stale = "```sh\ncurl -F img=@docs/7.png 'localhost:8000/encode?model=ec64' -o 7.ac   # by ec64-ea9647b7fd42\n```\n"
    with pytest.raises(AssertionError, match="was answered by 'ec64-360fddf1aed9'"):
        run_readme_commands(stale, server, tmp_path / "stale")


# ---------------------------------------------------------------- links, anchors, make targets, length


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_broken_links_and_anchors_are_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# The `mnist-codec` command\n## Settings\n## Settings\n")
    page.write_text(
        "# Top\n[ok](other.md#the-mnist-codec-command) [ok](other.md#settings-1) [ok](#top) [web](https://x.y)\n"
        "[gone](nothere.md) [anchor](other.md#settings-2) [self](#nowhere) `[in code](nothere.md)`\n"
    )
    assert broken_links(page) == [
        "page.md: nothere.md: no file " + os.path.relpath(tmp_path / "nothere.md", ROOT),
        "page.md: other.md#settings-2: no heading with anchor #settings-2 in other.md",
        "page.md: #nowhere: no heading with anchor #nowhere in page.md",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        pytest.param("The `mnist-codec` command", "the-mnist-codec-command", id="code"),
        pytest.param(
            "Rate-distortion: learned against classic codecs",
            "rate-distortion-learned-against-classic-codecs",
            id="colon",
        ),
        pytest.param(
            "What runs where: the event loop and the worker threads",
            "what-runs-where-the-event-loop-and-the-worker-threads",
            id="colon-words",
        ),
        pytest.param(
            "`ec64`, 64 latents entropy-coded into 24 bytes", "ec64-64-latents-entropy-coded-into-24-bytes", id="comma"
        ),
        pytest.param("MNIST_CODEC_MODELS and [links](x.md)", "mnist_codec_models-and-links", id="underscore-link"),
    ],
)
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_every_make_target_named_in_the_docs_exists() -> None:
    targets = make_targets()
    named = set().union(*(named_make_targets(path.read_text()) for path in [README, *DOCS]))
    assert {"serve", "test", "bench"} <= named, "the docs name the main targets"
    assert named - targets == set(), f"named in the docs but not in the Makefile: {sorted(named - targets)}"


def test_an_unknown_make_target_is_found() -> None:
    text = "Run `make serve`, then `make servce`.\n```sh\nmake test && make lint   # then make it so\n```\n"
    assert named_make_targets(text) == {"serve", "servce", "test", "lint"}
    assert "servce" not in make_targets()


def test_the_readme_stays_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the details belong in docs/"


# ---------------------------------------------------------------- formats.md against latent.py


def docstring_layouts() -> dict[str, str]:
    """Each format's byte layout as `app/codec/latent.py`'s docstring writes it, and the container's as
    `app/codec/container.py`'s does: title -> the indented table."""
    doc = (app.codec.latent.__doc__ or "") + "\n\n" + (app.codec.container.__doc__ or "")
    layouts = {}
    for title, table in re.findall(
        r'^((?:Format|Container) "[^"]+", version \d+)(?:.|\n)*?\n\n((?:    [^\n]*\n)+)', doc, re.M
    ):
        layouts[title] = "\n".join(line[4:].rstrip() for line in table.splitlines())
    return layouts


def test_formats_md_quotes_the_layouts_of_latent_py() -> None:
    """formats.md quotes each layout block of the docstrings (latent.py's formats, container.py's container), the
    source, byte for byte under its title."""
    layouts = docstring_layouts()
    assert set(layouts) == {
        'Format "6xf32le", version 1',
        'Format "24xu8", version 1',
        'Format "24xac", version 1',
        'Container "MNISTLAT", version 1',
    }
    formats = (ROOT / "docs" / "formats.md").read_text()
    blocks = ["\n".join(body) for _, body in code_blocks(formats)]
    for title, table in layouts.items():
        assert title in formats, f"docs/formats.md has no section for {title}"
        assert table in blocks, f"docs/formats.md does not quote {title}'s layout as latent.py has it:\n{table}"
    for name in app.codec.latent.FORMATS:
        assert f"`{name}`" in formats


# ---------------------------------------------------------------- the README's models table


def models_table_row(text: str, model_id: str) -> str | None:
    """The README's models-table row of one version: the row of its name that names its id, or, where the name
    has one row naming no id (a model with one version), that row."""
    model = model_id.rsplit("-", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith(f"| `{model}`")]
    named = [row for row in rows if model_id in row]
    if named:
        return named[0]
    return rows[0] if len(rows) == 1 and not re.search(rf"`{model}-[0-9a-f]{{12}}`", rows[0]) else None


def test_the_readme_models_table_is_the_measured_psnr() -> None:
    """Each version's row gives the mean PSNR of every effort level as model_weights/**/*.efforts.json records it
    (ec64's v1 and v2 each their own row, naming its model id)."""
    text = README.read_text()
    for path in sorted((ROOT / "model_weights").glob("**/*.efforts.json")):
        record = json.loads(path.read_text())
        row = models_table_row(text, record["model_id"])
        assert row, f"no row for {record['model_id']} in the README's models table"
        shown = [float(v) for v in re.findall(r"(\d+\.\d\d) dB", row)]
        assert shown == [round(level["psnr_db"], 2) for level in record["levels"]], (record["model_id"], shown)


def test_a_version_without_its_own_row_is_found() -> None:
    one = "| `ec64` | 784-512-256-64 | 26.64 dB |\n"
    assert models_table_row(one, "ec64-ea9647b7fd42") == one.strip()
    two = "| `ec64` v2, `ec64-360fddf1aed9` | 27.61 dB |\n| `ec64` v1, `ec64-ea9647b7fd42` | 26.64 dB |\n"
    assert models_table_row(two, "ec64-ea9647b7fd42") == "| `ec64` v1, `ec64-ea9647b7fd42` | 26.64 dB |"
    # a second version with no row of its own: the one row names the other version, or two rows name no id
    assert models_table_row("| `ec64` v1, `ec64-ea9647b7fd42` | 26.64 dB |\n", "ec64-360fddf1aed9") is None
    assert models_table_row("| `ec64` | 26.64 dB |\n| `ec64` | 27.61 dB |\n", "ec64-360fddf1aed9") is None
