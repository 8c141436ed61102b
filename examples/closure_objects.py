"""Closures: functions that capture variables, objects built from them, and what a
closure becomes when it runs in a thread (the same variables) or in a worker process
(a copy).

1. A closure captures *variables*, not values: it reads a variable when it runs, and
   ``nonlocal`` lets it rebind one. Python keeps such a variable in a *cell*, which
   the function and its closures share (``fn.__closure__``).
2. Several closures over the same cells make an object: its state is the cells, its
   methods are the closures. It behaves like an instance of a class with the same
   methods, and its state is reachable only through them.
3. Run in a worker thread (``plait.to_thread``), a closure uses the caller's cells, so
   its changes are the caller's. Sent to a ``plait.ProcessPool``, it travels by value:
   the worker gets a copy of the captured values as they are when the call is made,
   and what it changes stays in the worker. An instance of a class travels by value
   the same way.

Run: .venv/bin/python examples/closure_objects.py
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import CellType

import plait


def make_counter() -> Callable[[], int]:
    count = 0

    def increment() -> int:
        nonlocal count  # rebinds the variable of make_counter, not a local of its own
        count += 1
        return count

    return increment


def part1_closures() -> None:
    print("1. closures capture variables")
    counter = make_counter()
    print(f"   counter() three times: {[counter() for _ in range(3)]}")
    print(f"   free variables: {counter.__code__.co_freevars}")
    assert counter.__closure__ is not None
    print(f"   its cell holds {counter.__closure__[0].cell_contents}")

    # The classic surprise: each lambda captures the loop variable itself, which the
    # loop rebinds, so all of them read its last value when they are finally called.
    late = [lambda: i for i in range(3)]  # noqa: B023 - the surprise shown here
    print(f"   [lambda: i for i in range(3)] -> {[f() for f in late]}")
    # A default argument is evaluated when the lambda is made: a value, not a variable.
    early = [lambda i=i: i for i in range(3)]
    print(f"   [lambda i=i: i ...]           -> {[f() for f in early]}")


@dataclass(frozen=True)
class ClosureAccount:
    """The 'object': three functions that share the cells of make_account()."""

    deposit: Callable[[int], int]
    withdraw: Callable[[int], int]
    balance: Callable[[], int]


def make_account(opening: int) -> ClosureAccount:
    balance = opening
    history: list[int] = []

    def deposit(amount: int) -> int:
        nonlocal balance
        balance += amount
        history.append(amount)
        return balance

    def withdraw(amount: int) -> int:
        nonlocal balance
        if amount > balance:
            raise ValueError(f"insufficient funds: {balance} < {amount}")
        balance -= amount
        history.append(-amount)
        return balance

    def get_balance() -> int:
        return balance

    return ClosureAccount(deposit, withdraw, get_balance)


class Account:
    """The same object, written as a class: the state is in the instance's __dict__."""

    def __init__(self, opening: int) -> None:
        self._balance = opening
        self.history: list[int] = []

    def deposit(self, amount: int) -> int:
        self._balance += amount
        self.history.append(amount)
        return self._balance

    def balance(self) -> int:
        return self._balance


def cells(fn: Callable[..., object]) -> dict[str, CellType]:
    """A function's cells, by the name of the variable each one holds."""
    return dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True))


def part2_objects() -> None:
    print("2. an object made of closures, next to a class")
    closures = make_account(100)
    instance = Account(100)
    closures.deposit(50)
    instance.deposit(50)
    print(f"   after deposit(50): closures {closures.balance()}, class {instance.balance()}")
    try:
        closures.withdraw(500)
    except ValueError as exc:
        print(f"   withdraw(500): ValueError: {exc}")
    # The methods share their cells: the 'fields' of the object.
    shared = cells(closures.deposit)["balance"] is cells(closures.balance)["balance"]
    print(f"   deposit and balance share the 'balance' cell: {shared}")
    contents = {name: cell.cell_contents for name, cell in cells(closures.deposit).items()}
    print(f"   the cells of deposit hold {contents}")


async def part3_threads_and_processes() -> None:
    print("3. the same closures in a worker thread, then in a worker process")
    closures = make_account(100)
    instance = Account(100)

    result = await plait.to_thread.run_sync(closures.deposit, 10)
    print(f"   thread:  deposit(10) returned {result}; here the balance is now", end=" ")
    print(f"{closures.balance()} (the same cell)")

    async with plait.ProcessPool(1) as pool:
        for _ in range(2):
            result = await pool.run_sync(closures.deposit, 10)
            print(f"   process: deposit(10) returned {result}; here it is still", end=" ")
            print(f"{closures.balance()} (the worker changed a copy)")
        result = await pool.run_sync(instance.deposit, 10)
        print(f"   process: Account.deposit(10) returned {result}; here", end=" ")
        print(f"{instance.balance()}, history {instance.history} (a copy too)")
        # To keep a worker's result, return it and apply it here.
        closures.deposit(await pool.run_sync(lambda n: n * 2, 21))
        print(f"   returned 42 from the worker and deposited it here: {closures.balance()}")


def main() -> None:
    part1_closures()
    part2_objects()
    plait.run(part3_threads_and_processes)


if __name__ == "__main__":
    main()
