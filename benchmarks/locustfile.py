"""Simulated students for Locust: each one is a browser tab speaking Streamlit's protocol.

``benchmarks/load_test.py`` drives this file as a library (it also starts the server, pins the cores,
checks isolation and writes the report); Locust's own command line works too, against a running app:

    locust -f benchmarks/locustfile.py --headless --host http://127.0.0.1:8501 -u 10 -r 2 -t 60s --think 5

What a student does is in ``students.py``; the timing and fingerprints of each step in ``st_client.py``.
Locust's statistics get one "request" per interaction (type "streamlit", named by its kind).
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from locust import User, events, task  # noqa: E402  (locust patches the sockets: import it first)
from locust.exception import StopUser  # noqa: E402

from st_client import ProtocolError  # noqa: E402
from students import Lesson, Record, Settings  # noqa: E402

# ---------------------------------------------------------------------------------- Locust
SETTINGS = Settings(think=float(os.environ.get("VIT_LOAD_THINK", "5")))
_numbers = itertools.count()


class Student(User):
    """A Locust user that is one student (see the module docstring)."""

    def wait_time(self):  # the lesson thinks between its own steps
        return 0

    @task
    def lesson(self) -> None:
        import gevent

        def report(record: Record) -> None:
            self.environment.events.request.fire(
                request_type="streamlit", name=record.kind, response_time=record.seconds * 1000,
                response_length=0, exception=ProtocolError(record.error) if record.error else None, context={})

        lesson = Lesson(next(_numbers), self.host, SETTINGS, think=gevent.sleep, on_record=report)
        try:
            lesson.run()
        except Exception:
            pass  # recorded by the lesson
        raise StopUser()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--think", type=float, default=SETTINGS.think, help="mean think time between actions (s)")


@events.test_start.add_listener
def _start(environment, **kwargs) -> None:
    options = getattr(environment, "parsed_options", None)
    if options is not None and getattr(options, "think", None) is not None:
        SETTINGS.think = options.think
