"""The numbers a notebook prints, and whether two executions printed the same ones.

Used by tests/test_notebooks.py to check that the outputs committed in notebooks/*.ipynb are those
of a fresh execution of the current code. The rules (why each tolerance) are in
`numbers_match`'s docstring.
"""
import math
import re

VARIES_TAG = "varies"   # cell metadata tag: its numbers differ between runs or machines

# a number standing on its own: not part of a name (float32, layer.0, py311, 0x7f..., L1)
_NUMBER = re.compile(r"(?<![\w.])(-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan|inf)(?![\w])")

ERROR_SCALE = 1e-3      # below this magnitude a printed number is an error or a rounding residue
FLOAT64_NOISE = 1e-12   # float64 rounding level: anything below it is "zero up to rounding"
FLOAT32_NOISE = 1e-6    # an exact 0 matches a float32 rounding-level error below this
RELATIVE = 1e-9         # values: printed digits may move by one unit, plus this relative slack


def cell_text(cell):
    """The text a code cell showed: its stdout streams and the text/plain of results without a
    picture, concatenated (a stream may arrive in several pieces). stderr is left out: it holds
    warnings and Numba's compilation notices, which depend on the on-disk cache."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "text/plain" in data and "image/png" not in data:
                parts.append(data["text/plain"])
    return "".join(parts)


def numbers(text):
    """The numbers in `text`, in order, as the strings printed."""
    return _NUMBER.findall(text)


def _resolution(token):
    """One unit in the last printed digit of a decimal token ("0.68" -> 0.01, "-5.6e-01" -> 1e-05)."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (int(exponent or 0) - decimals)


def numbers_match(committed, fresh):
    """True if two printed numbers (strings) agree within the tolerance their kind allows.

    - integers (no decimal point, no exponent: counts, shapes, ids, indices): exactly equal;
    - nan and inf: the same word;
    - values (magnitude >= 1e-3: losses, probabilities, scores, gradient entries): within one unit
      in the last printed digit plus 1e-9 relative, since a value close to a rounding boundary can
      print one digit apart on another CPU;
    - error magnitudes (both below 1e-3: measured differences, rounding residues): within a factor
      of 10, compared on a log scale. Rounding errors depend on the order of the sums, which
      differs between BLAS builds and between AVX2 and AVX-512 kernels, so only their order of
      magnitude is a property of the code. Two float64 residues both below 1e-12 match (0.0 vs
      2e-16 is the same statement: zero up to rounding), and an exact 0 matches an error below
      1e-6 (float32: the two summation orders may happen to agree on one CPU and not another).
    """
    if committed in ("nan", "inf") or fresh in ("nan", "inf"):
        return committed == fresh
    integer = not any(c in committed + fresh for c in ".eE")
    a, b = float(committed), float(fresh)
    if integer:
        return a == b
    if max(abs(a), abs(b)) >= ERROR_SCALE:
        unit = max(_resolution(committed), _resolution(fresh))
        return abs(a - b) <= 1.0001 * unit + RELATIVE * max(abs(a), abs(b))
    if max(abs(a), abs(b)) < FLOAT64_NOISE:
        return True
    if a == 0 or b == 0:
        return max(abs(a), abs(b)) < FLOAT32_NOISE
    return (a > 0) == (b > 0) and abs(math.log10(abs(a)) - math.log10(abs(b))) <= 1.0


def compare_notebooks(committed_nb, fresh_nb):
    """A list of differences (empty when the committed outputs match the fresh ones): for every
    code cell not tagged "varies", its numbers in order must match (same count, each within
    `numbers_match`)."""
    problems = []
    committed_cells = [c for c in committed_nb.cells if c.cell_type == "code"]
    fresh_cells = [c for c in fresh_nb.cells if c.cell_type == "code"]
    if len(committed_cells) != len(fresh_cells):
        return [f"{len(committed_cells)} code cells committed, {len(fresh_cells)} executed"]
    for i, (old, new) in enumerate(zip(committed_cells, fresh_cells), start=1):
        if VARIES_TAG in old.get("metadata", {}).get("tags", []):
            continue
        a, b = numbers(cell_text(old)), numbers(cell_text(new))
        if len(a) != len(b):
            problems.append(f"code cell {i}: {len(a)} numbers committed, {len(b)} in the fresh run "
                            f"(committed {a[:8]}..., fresh {b[:8]}...)")
            continue
        bad = [(x, y) for x, y in zip(a, b) if not numbers_match(x, y)]
        if bad:
            problems.append(f"code cell {i}: committed vs fresh {bad[:6]}"
                            + (f" and {len(bad) - 6} more" if len(bad) > 6 else ""))
    return problems
