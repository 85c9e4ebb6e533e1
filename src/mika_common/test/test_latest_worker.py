import threading

from mika_common.latest_worker import LatestOnlyWorker


def test_only_the_newest_pending_item_is_processed_and_drops_are_reported():
    release = threading.Event()
    processed = []

    def process(item):
        if item == 'first':
            release.wait(2.0)
        processed.append(item)

    worker = LatestOnlyWorker(process, on_error=lambda item, error: None)
    assert worker.submit('first') is False
    # 'first' is running and blocked: the next two compete for the single pending slot
    while not processed and not worker._busy:
        pass
    assert worker.submit('second') is False
    assert worker.submit('third') is True  # 'second' was replaced before it ran
    release.set()
    assert worker.wait_idle(2.0)
    worker.stop()
    assert processed == ['first', 'third']


def test_an_exception_is_reported_and_the_worker_keeps_going():
    errors = []
    processed = []

    def process(item):
        if item == 'bad':
            raise ValueError('broken frame')
        processed.append(item)

    worker = LatestOnlyWorker(process, on_error=lambda item, error: errors.append((item, str(error))))
    worker.submit('bad')
    assert worker.wait_idle(2.0)
    worker.submit('good')
    assert worker.wait_idle(2.0)
    worker.stop()
    assert errors == [('bad', 'broken frame')]
    assert processed == ['good']
