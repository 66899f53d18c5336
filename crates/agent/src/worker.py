# pstar's Python worker: runs a pilot's function units, one call at a time.
#
# The agent starts one per core that runs function units, as
# `<python> <this file>`, and keeps it for the next call: a call costs no interpreter
# start. It speaks on its standard input and output, in frames:
#
#   agent -> worker:  u32 length (little-endian), then the pickled (function, args, kwargs)
#   worker -> agent:  u8 kind (bit 7 set: the worker ends after this answer), u32 length,
#                     then the pickled answer:
#                     kind 0: what the function returned
#                     kind 1: u32 length and "Type: message" (UTF-8), then
#                             (pickled exception or None, traceback text, type name,
#                              message)
#
# and first says b"PSW1" once it is ready. Whatever the function prints goes to the
# worker's log (its standard error), never into the frames. It ends at the end of its
# input: when the agent ends, so do its workers.
import os
import pickle
import struct
import sys
import traceback


def read_exact(stream, n):
    chunks = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def main():
    # The client's import path, for functions of its own modules (set by the Python
    # package for local pilots).
    extra = [p for p in os.environ.get("PSTAR_PYTHONPATH", "").split(":") if p]
    sys.path[:0] = [p for p in extra if p not in sys.path]
    try:
        import cloudpickle
    except ImportError as e:
        sys.stderr.write(
            "pstar worker: %s; function units need cloudpickle in the pilot's Python "
            "(%s): pip install cloudpickle, or set the pilot's `python`\n" % (e, sys.executable)
        )
        sys.stderr.flush()
        return 3
    frames_in = os.fdopen(os.dup(0), "rb")
    frames_out = os.fdopen(os.dup(1), "wb")
    # The function's prints and input never touch the frames.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)

    def dumps(value):
        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def raised(e):
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        name = type(e).__qualname__
        if type(e).__module__ not in ("builtins", "__main__"):
            name = "%s.%s" % (type(e).__module__, name)
        try:
            message = str(e)
        except BaseException:
            message = "(its message cannot be shown)"
        summary = ("%s: %s" % (name, message) if message else name)[:1000].encode("utf-8", "replace")
        # The exception pickled apart: one whose class the client cannot import still
        # comes back as its name, message and traceback.
        try:
            exception = dumps(e)
        except BaseException:
            exception = None
        pickled = pickle.dumps((exception, text, name, message), protocol=pickle.HIGHEST_PROTOCOL)
        return struct.pack("<I", len(summary)) + summary + pickled

    frames_out.write(b"PSW1")
    frames_out.flush()
    me = os.getpid()
    home = os.getcwd()
    while True:
        head = read_exact(frames_in, 4)
        if head is None:
            return 0
        (n,) = struct.unpack("<I", head)
        payload = read_exact(frames_in, n)
        if payload is None:
            return 0
        try:
            fn, args, kwargs = pickle.loads(payload)
            del payload
            value = fn(*args, **kwargs)
            kind, answer = 0, dumps(value)
        except BaseException as e:  # SystemExit and KeyboardInterrupt are the call's too
            kind, answer = 1, raised(e)
        if os.getpid() != me:
            # A child the function forked, returning here: it must not answer, nor read
            # the next call (the worker's own answer is the call's).
            os._exit(0)
        value = None
        fit = restore(home)
        # Bit 7 of the kind: this worker ends after this answer (the agent does not reuse it).
        frames_out.write(struct.pack("<BI", kind | (0 if fit else 0x80), len(answer)))
        frames_out.write(answer)
        frames_out.flush()
        if not fit:
            # Its standard streams are gone: the next call gets a fresh worker.
            return 0


def restore(home):
    """Undoes what a call changed that the next call would see: the working directory and
    Python's standard streams. False if the worker is unfit (fd 1 or 2 closed)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    try:
        if os.getcwd() != home:
            os.chdir(home)
    except OSError:
        try:
            os.chdir(home)
        except OSError:
            return False
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
