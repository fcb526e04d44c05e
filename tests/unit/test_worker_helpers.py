"""The worker's pure helpers do what the worker relies on.

Proven here: retry backoff doubles from the base delay and never exceeds its cap; the
scrubber replaces every occurrence of every secret of at least four characters (the
longest first) and leaves all other text alone; `PROGRESS_LINE` reads a percent and a
message; `entrypoint_of` picks `spec.entrypoint` only if it is one of the code files,
else the first Python file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from controlroom.commands.execution.worker import PROGRESS_LINE, REDACTED, Scrubber
from controlroom.domain.runs.retry import DEFAULT_BASE_DELAY_S, DEFAULT_MAX_DELAY_S, RetryPolicy
from controlroom.domain.runs.run import Run
from controlroom.jobtypes.base import entrypoint_of as _entrypoint_of

MAX_ATTEMPT = 11
"""max_retries is at most 10 at the API, so attempt 11 is the last that can fail."""

bases = st.floats(0.001, 600.0)
caps = st.floats(0.0, 3600.0)
attempts = st.integers(1, 200)

SECRET_CHARS = "abcdefgh.*+?()[]{}|^$\\"
FILLER_CHARS = "xyz 0123\n:=-_/"
secrets = st.text(alphabet=SECRET_CHARS, min_size=4, max_size=10)
fillers = st.text(alphabet=FILLER_CHARS, max_size=20)


def entrypoint_of(run: Run) -> str | None:
    """The entrypoint the job types would pick for `run`."""
    return _entrypoint_of([f["path"] for f in run.code.get("files", [])], run.spec)


def run_with(files: list[str], spec: dict[str, Any] | None = None, code: dict[str, Any] | None = None) -> Run:
    """A submitted run carrying code files at `files` (or exactly `code`) and `spec`."""
    return Run.submit(
        run_id=uuid4(),
        tenant_id="tenant-a",
        job_type="spark_etl",
        created_by="alice",
        code=code if code is not None else {"files": [{"path": p, "content": ""} for p in files]},
        spec=spec or {},
        sealed_secrets=None,
        timeout_s=60,
        max_retries=0,
        labels={},
        callbacks={},
        idempotency_key=None,
        request_hash="hash",
        job_name="job",
        submitted_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


# -- RetryPolicy.delay --------------------------------------------------------


def test_the_default_policy_waits_2_4_8_seconds_and_at_most_five_minutes() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert policy.delay(MAX_ATTEMPT) == DEFAULT_MAX_DELAY_S
    assert (policy.base_delay_s, policy.max_delay_s) == (DEFAULT_BASE_DELAY_S, DEFAULT_MAX_DELAY_S)


@given(base=bases, cap=caps)
def test_the_first_retry_waits_the_base_delay_unless_capped(base: float, cap: float) -> None:
    assert RetryPolicy(base, cap).delay(1) == min(base, cap)


@given(base=bases, cap=caps, attempt=attempts)
def test_the_delay_never_exceeds_the_cap_and_never_shrinks(base: float, cap: float, attempt: int) -> None:
    policy = RetryPolicy(base, cap)
    assert 0 <= policy.delay(attempt) <= cap
    assert policy.delay(attempt) <= policy.delay(attempt + 1)


@given(base=bases, cap=caps, attempt=attempts)
def test_the_delay_doubles_each_attempt_until_it_reaches_the_cap(
    base: float, cap: float, attempt: int
) -> None:
    policy = RetryPolicy(base, cap)
    assert policy.delay(attempt + 1) == min(cap, 2 * policy.delay(attempt))


@given(base=bases, cap=caps, attempt=st.integers(1, MAX_ATTEMPT))
def test_the_delay_is_base_times_two_to_the_failed_attempts_before(
    base: float, cap: float, attempt: int
) -> None:
    assert RetryPolicy(base, cap).delay(attempt) == min(cap, base * 2 ** (attempt - 1))


# -- Scrubber -------------------------------------------------------------------


@given(values=st.lists(secrets, min_size=1, max_size=5), parts=st.data())
def test_the_scrubber_replaces_every_occurrence_of_every_secret(values: list[str], parts: Any) -> None:
    chosen = parts.draw(st.lists(st.sampled_from(values), max_size=6))
    gaps = parts.draw(st.lists(fillers.filter(bool), min_size=len(chosen), max_size=len(chosen)))
    head = parts.draw(fillers)
    text = head + "".join(secret + gap for secret, gap in zip(chosen, gaps, strict=True))
    expected = head + "".join(REDACTED + gap for gap in gaps)
    assert Scrubber(values)(text) == expected


@given(values=st.lists(secrets, max_size=5), text=st.text(alphabet=SECRET_CHARS + FILLER_CHARS))
def test_no_secret_survives_scrubbing_any_text(values: list[str], text: str) -> None:
    scrubbed = Scrubber(values)(text)
    assert not any(secret in scrubbed for secret in values)


@given(values=st.lists(secrets, max_size=5), text=fillers)
def test_text_without_secrets_is_left_alone(values: list[str], text: str) -> None:
    assert Scrubber(values)(text) == text


@given(values=st.lists(st.text(max_size=3), max_size=5), text=st.text())
def test_values_shorter_than_four_characters_are_not_treated_as_secrets(values: list[str], text: str) -> None:
    assert Scrubber(values)(text) == text


def test_a_longer_secret_is_replaced_whole_before_its_prefix() -> None:
    scrub = Scrubber(["pass", "password1"])
    assert scrub("user=bob password1 pass") == f"user=bob {REDACTED} {REDACTED}"


def test_secrets_are_matched_literally_not_as_patterns() -> None:
    scrub = Scrubber(["a.b*c"])
    assert scrub("x a.b*c y") == f"x {REDACTED} y"
    assert scrub("axbbbc") == "axbbbc"


def test_a_scrubber_without_secrets_returns_text_unchanged() -> None:
    assert Scrubber([])("nothing to hide") == "nothing to hide"


# -- PROGRESS_LINE ------------------------------------------------------------------


@given(
    percent=st.integers(0, 1000) | st.decimals(0, 1000, places=2).map(str),
    gap=st.text(alphabet=" \t", min_size=1, max_size=3),
    message=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30).filter(
        lambda m: not m[:1].isspace()
    ),
)
def test_a_progress_line_yields_its_percent_and_message(percent: Any, gap: str, message: str) -> None:
    match = PROGRESS_LINE.match(f"::progress{gap}{percent} {message}")
    assert match is not None
    assert float(match[1]) == float(percent)
    assert match[2] == message


def test_a_progress_line_may_omit_the_message() -> None:
    match = PROGRESS_LINE.match("::progress 12.5")
    assert match is not None
    assert (match[1], match[2]) == ("12.5", "")


def test_lines_that_only_look_like_progress_are_not_progress() -> None:
    for line in (
        "progress 50",
        " ::progress 50",
        "::progress",
        "::progress50",
        "::progress -5",
        "::progress abc",
        "::progress .5",
        "log ::progress 50",
    ):
        assert PROGRESS_LINE.match(line) is None, line


# -- entrypoint_of ------------------------------------------------------------------

paths = st.lists(
    st.text(alphabet="abc/_", min_size=1, max_size=6).flatmap(
        lambda stem: st.sampled_from([f"{stem}.py", f"{stem}.sql", f"{stem}.txt", stem])
    ),
    unique=True,
    max_size=6,
)


@given(files=paths)
def test_without_a_chosen_entrypoint_the_first_python_file_is_picked(files: list[str]) -> None:
    expected = next((path for path in files if path.endswith(".py")), None)
    assert entrypoint_of(run_with(files)) == expected
    assert entrypoint_of(run_with(files, {"entrypoint": ""})) == expected


@given(files=paths.filter(bool), data=st.data())
def test_a_chosen_entrypoint_among_the_files_is_picked(files: list[str], data: Any) -> None:
    chosen = data.draw(st.sampled_from(files))
    assert entrypoint_of(run_with(files, {"entrypoint": chosen})) == chosen


@given(files=paths)
def test_a_chosen_entrypoint_missing_from_the_files_gives_none(files: list[str]) -> None:
    assert entrypoint_of(run_with(files, {"entrypoint": "missing/main.py"})) is None


def test_a_run_without_code_files_has_no_entrypoint() -> None:
    assert entrypoint_of(run_with([], code={})) is None
    assert entrypoint_of(run_with([], {"entrypoint": "main.py"}, code={})) is None
