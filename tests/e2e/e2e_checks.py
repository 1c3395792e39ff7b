"""The end-to-end tests' checks: a failed check prints one FAIL line and is counted, the test
goes on to its other checks, and finish() exits non-zero when any failed.

    from e2e_checks import check, finish
    check(r.returncode == 0, f"vacc train failed: {r.stderr}")
    finish("cli_train")"""
import sys

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def finish(name):
    print(f"{name}:", "FAILED" if failures else "passed", f"({len(failures)} failures)")
    sys.exit(1 if failures else 0)
