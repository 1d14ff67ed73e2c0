"""track_purchase, track_refund, track_job: sync, async, methods, context managers."""

from __future__ import annotations

import asyncio
import inspect
import time
from datetime import UTC, datetime, timedelta

import pytest
from support import Captured

from edgemetrics.decorators import track_job, track_purchase, track_refund
from edgemetrics.events import InvalidEvent, Job, Purchase, Refund


class PaymentDeclined(Exception):
    pass


def purchase_fields(
    result: dict[str, object], *args: object, **kwargs: object
) -> dict[str, object]:
    return {"amount_minor": result["cents"], "currency": "EUR", "transaction_id": result["tx"]}


class Shop:
    def __init__(self) -> None:
        self.sold = 0

    @track_purchase(purchase_fields)
    def buy(self, content_id: str, *, coupon: str | None = None) -> dict[str, object]:
        """Sell one item."""
        self.sold += 1
        return {"cents": 499, "tx": f"tx-{content_id}"}

    @track_purchase(purchase_fields)
    async def buy_async(self, content_id: str) -> dict[str, object]:
        await asyncio.sleep(0)
        return {"cents": 999, "tx": f"atx-{content_id}"}

    @track_purchase(purchase_fields)
    def declined(self, content_id: str) -> dict[str, object]:
        raise PaymentDeclined(content_id)

    @track_job(queue="media")
    def transcode(self, video_id: str) -> str:
        return video_id.upper()

    @staticmethod
    @track_job("cleanup")
    def cleanup() -> int:
        return 3

    @classmethod
    @track_job()
    def audit(cls) -> str:
        return cls.__name__


def test_purchase_on_methods_sync_and_async(captured: Captured) -> None:
    shop = Shop()
    assert shop.buy("v1", coupon="X")["tx"] == "tx-v1"
    assert asyncio.run(shop.buy_async("v2"))["tx"] == "atx-v2"
    purchases = [e for e in captured.events() if isinstance(e, Purchase)]
    assert [(p.amount_minor, p.transaction_id) for p in purchases] == [
        (499, "tx-v1"),
        (999, "atx-v2"),
    ]
    assert shop.sold == 1


def test_signature_and_introspection_are_preserved() -> None:
    assert Shop.buy.__name__ == "buy" and Shop.buy.__doc__ == "Sell one item."
    assert (
        str(inspect.signature(Shop.buy))
        == "(self, content_id: 'str', *, coupon: 'str | None' = None) -> 'dict[str, object]'"
    )
    assert inspect.iscoroutinefunction(Shop.buy_async)
    assert not inspect.iscoroutinefunction(Shop.buy)


def test_failed_purchase_records_nothing_and_reraises_the_same_error(captured: Captured) -> None:
    with pytest.raises(PaymentDeclined) as caught:
        Shop().declined("v3")
    assert caught.value.args == ("v3",)
    assert [e for e in captured.events() if isinstance(e, Purchase)] == []


def test_bad_extracted_fields_name_the_field() -> None:
    @track_purchase(
        lambda result, *a, **k: {"amount_minor": -5, "currency": "EUR", "transaction_id": "t"}
    )
    def buy() -> None:
        return None

    with pytest.raises(InvalidEvent, match="amount_minor"):
        buy()


def test_refund_decorator_and_context_manager(captured: Captured) -> None:
    @track_refund(
        lambda ok, tx, cents: {
            "amount_minor": cents,
            "currency": "USD",
            "transaction_id": f"r-{tx}",
            "original_transaction_id": tx,
        }
    )
    def refund(tx: str, cents: int) -> bool:
        return True

    assert refund("tx1", 250) is True
    with pytest.raises(PaymentDeclined), track_refund() as manual:
        manual.record(amount_minor=1, currency="USD", transaction_id="never")
        raise PaymentDeclined("gateway down")
    with track_refund() as manual:
        manual.record(amount_minor=100, currency="USD", transaction_id="r2")
    refunds = [e for e in captured.events() if isinstance(e, Refund)]
    assert [(r.transaction_id, r.original_transaction_id) for r in refunds] == [
        ("r-tx1", "tx1"),
        ("r2", None),
    ]


def test_job_outcomes_names_and_queue_delay(captured: Captured) -> None:
    shop = Shop()
    assert shop.transcode("v1") == "V1"
    assert Shop.cleanup() == 3 and Shop.audit() == "Shop"

    enqueued = datetime.now(UTC) - timedelta(seconds=2)

    @track_job(queue="mail", enqueued_at=lambda user, at: at)
    async def send_mail(user: str, at: datetime) -> None:
        raise ConnectionError("smtp down")

    with pytest.raises(ConnectionError, match="smtp down"):
        asyncio.run(send_mail("u1", enqueued))

    with pytest.raises(KeyError), track_job("import", enqueued_at=time.time() - 1) as job:
        job.retries = 2
        raise KeyError("row")

    jobs = {e.job_name: e for e in captured.events() if isinstance(e, Job)}
    assert jobs["Shop.transcode"].queue == "media" and jobs["Shop.transcode"].outcome == "success"
    assert jobs["cleanup"].outcome == "success" and "Shop.audit" in jobs
    mail = jobs["test_job_outcomes_names_and_queue_delay.<locals>.send_mail"]
    assert (mail.outcome, mail.queue) == ("error", "mail") and mail.queue_delay_ms >= 2000
    assert (jobs["import"].outcome, jobs["import"].retries) == ("error", 2)
    assert jobs["import"].queue_delay_ms >= 1000


def test_purchase_decorator_without_extract_is_refused() -> None:
    with pytest.raises(TypeError, match="extract"):
        track_purchase()(lambda: None)
