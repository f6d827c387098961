"""Cost of suspending and resuming one example, the mechanism behind batch_map: a greenlet switch against the
thread hand-off (a pair of semaphores) that a thread-based batch_map would need.

    python -m bench.batch_map_overhead
"""
import threading
import time

import greenlet

N = 20000


def greenlet_round_trips(n):
    main = greenlet.getcurrent()

    def worker():
        for _ in range(n):
            main.switch()

    g = greenlet.greenlet(worker)
    t0 = time.perf_counter()
    for _ in range(n):
        g.switch()
    return (time.perf_counter() - t0) / n


def thread_round_trips(n):
    go, done = threading.Semaphore(0), threading.Semaphore(0)

    def worker():
        for _ in range(n):
            go.acquire()
            done.release()

    t = threading.Thread(target=worker)
    t.start()
    t0 = time.perf_counter()
    for _ in range(n):
        go.release()
        done.acquire()
    elapsed = time.perf_counter() - t0
    t.join()
    return elapsed / n


def main():
    g = min(greenlet_round_trips(N) for _ in range(3))
    t = min(thread_round_trips(N) for _ in range(3))
    print(f"suspend + resume of one example: greenlet {g * 1e6:.2f} us, threads {t * 1e6:.2f} us "
          f"({t / g:.0f}x slower)")


if __name__ == "__main__":
    main()
