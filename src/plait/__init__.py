"""plait: a structured concurrency runtime for Python.

This module only re-exports; the code lives in the private modules (see DESIGN.md).
"""

from __future__ import annotations

from . import abc as abc
from . import from_thread as from_thread
from . import lowlevel as lowlevel
from . import sched as sched
from . import socket as socket
from . import testing as testing
from . import to_process as to_process
from . import to_thread as to_thread
from ._core._cancel import CancelScope as CancelScope
from ._core._handles import Handle as Handle
from ._core._handles import TimerHandle as TimerHandle
from ._core._kernel import Loop as Loop
from ._core._task import Task as Task
from ._core._taskgroup import TASK_STATUS_IGNORED as TASK_STATUS_IGNORED
from ._core._taskgroup import TaskGroup as TaskGroup
from ._core._taskgroup import TaskStatus as TaskStatus
from ._core._traps import checkpoint as checkpoint
from ._exceptions import BrokenResourceError as BrokenResourceError
from ._exceptions import BrokenWorkerError as BrokenWorkerError
from ._exceptions import BusyResourceError as BusyResourceError
from ._exceptions import Cancelled as Cancelled
from ._exceptions import ClosedResourceError as ClosedResourceError
from ._exceptions import Deadlock as Deadlock
from ._exceptions import EndOfStream as EndOfStream
from ._exceptions import TaskCancelled as TaskCancelled
from ._exceptions import WouldBlock as WouldBlock
from ._futures import wait_future as wait_future
from ._gather import as_completed as as_completed
from ._gather import coroutine as coroutine
from ._gather import gather as gather
from ._net import UnixSocketListener as UnixSocketListener
from ._net import open_tcp_listeners as open_tcp_listeners
from ._net import open_tcp_stream as open_tcp_stream
from ._net import open_unix_listener as open_unix_listener
from ._net import open_unix_stream as open_unix_stream
from ._net import serve_listeners as serve_listeners
from ._net import serve_tcp as serve_tcp
from ._net import serve_unix as serve_unix
from ._portal import Portal as Portal
from ._processes._pool import ProcessPool as ProcessPool
from ._queue import LifoQueue as LifoQueue
from ._queue import PriorityQueue as PriorityQueue
from ._queue import Queue as Queue
from ._queue import QueueStatistics as QueueStatistics
from ._run import current_task as current_task
from ._run import print_task_tree as print_task_tree
from ._run import run as run
from ._run import task_tree as task_tree
from ._signals import open_signal_receiver as open_signal_receiver
from ._streams import SocketListener as SocketListener
from ._streams import SocketStream as SocketStream
from ._streams import Stream as Stream
from ._subprocess import Process as Process
from ._subprocess import open_process as open_process
from ._subprocess import run_process as run_process
from ._sync import BoundedSemaphore as BoundedSemaphore
from ._sync import CapacityLimiter as CapacityLimiter
from ._sync import CapacityLimiterStatistics as CapacityLimiterStatistics
from ._sync import Condition as Condition
from ._sync import ConditionStatistics as ConditionStatistics
from ._sync import Event as Event
from ._sync import EventStatistics as EventStatistics
from ._sync import Lock as Lock
from ._sync import LockStatistics as LockStatistics
from ._sync import Semaphore as Semaphore
from ._sync import SemaphoreStatistics as SemaphoreStatistics
from ._threadpool import ThreadPool as ThreadPool
from ._threadqueue import ThreadQueue as ThreadQueue
from ._threadqueue import ThreadQueueStatistics as ThreadQueueStatistics
from ._timeouts import current_time as current_time
from ._timeouts import fail_after as fail_after
from ._timeouts import fail_at as fail_at
from ._timeouts import move_on_after as move_on_after
from ._timeouts import move_on_at as move_on_at
from ._timeouts import sleep as sleep
from ._timeouts import sleep_forever as sleep_forever
from ._timeouts import sleep_until as sleep_until
from ._tls import SSLStream as SSLStream

for _obj in (Loop, Task, Handle, TimerHandle, TaskStatus, checkpoint):
    _obj.__module__ = "plait"
del _obj

__version__ = "0.1.0.dev0"
