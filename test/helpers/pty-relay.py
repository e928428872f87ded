"""Runs a command on a new pseudo-terminal, as a person at a terminal would: the relay's stdin is typed
into the terminal, what the command writes to it comes out on the relay's stdout. The command's pid is
written first to stderr ("PID <n>"); the relay exits with the command's exit status (128 + signal when a
signal ended it). When the relay's stdin closes (the test that drives it is gone), the command is killed,
so that no machine outlives its test. Used by test/helpers/pty.ts (python3's pty module: no npm package
needed)."""
import os, pty, select, signal, sys

pid, master = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
sys.stderr.write(f"PID {pid}\n")
sys.stderr.flush()
stdin = sys.stdin.fileno()
stdin_open = True
while True:
    fds = [master] + ([stdin] if stdin_open else [])
    r, _, _ = select.select(fds, [], [])
    if stdin in r:
        data = os.read(stdin, 65536)
        if data:
            os.write(master, data)
        else:
            stdin_open = False
            os.kill(pid, signal.SIGKILL)
    if master in r:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if not data:
            break
        os.write(sys.stdout.fileno(), data)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
