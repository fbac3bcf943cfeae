"""A re-drive that payment-svc refuses because the payment or refund moved
after the sweep listed it (a webhook recorded the provider's id meanwhile)
is nothing to do, not an error of the run; any other refusal still is.
The sweeps' re-drive step, on the session stack over real gRPC."""

from __future__ import annotations

import grpc
from reconciler_testkit import create, reconciler_env

from payments.v1 import payment_pb2 as pb
from payments.v1 import payment_service_pb2 as svc
from payments.v1 import payment_service_pb2_grpc as svc_grpc
from payments_dev.stack import Stack
from reconciler import refund_sweep, sweep
from reconciler.context import open_context
from reconciler.runs import Tally
from reconciler.settings import Settings
from tests.support import auth, new_key


async def test_a_redrive_of_what_a_webhook_recorded_meanwhile_is_no_error(
    stack: Stack, channel: grpc.aio.Channel
) -> None:
    payment = await create(channel, payment_method="pm_card_visa")
    reply = await svc_grpc.PaymentServiceStub(channel).RefundPayment(
        svc.RefundPaymentRequest(payment_id=payment.id, idempotency_key=new_key(), amount=100),
        metadata=auth(),
        timeout=10,
    )
    assert payment.provider_payment_id and reply.refund.provider_refund_id
    # As the sweep had them: before the provider's ids were recorded.
    listed_payment = pb.Payment(id=payment.id, status=pb.PAYMENT_STATUS_UNKNOWN)
    listed_refund = pb.Refund(id=reply.refund.id, status=pb.REFUND_STATUS_UNKNOWN)

    async with open_context(Settings.from_env(reconciler_env(stack))) as ctx:
        tally = Tally()
        assert await sweep._redrive(ctx, tally, listed_payment) is None
        assert await refund_sweep._redrive(ctx, tally, listed_refund) is None
        assert tally.errors == 0

        # A refusal that does not say "moved since": still an error.
        unknown = pb.Refund(id="rfd_" + "0" * 32, status=pb.REFUND_STATUS_UNKNOWN)
        assert await refund_sweep._redrive(ctx, tally, unknown) is None
        assert tally.errors == 1
