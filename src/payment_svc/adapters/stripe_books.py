"""The provider's books for an operator's correction (domain/corrections.py):
what Stripe took back of one payment, read with the Stripe package's
read-only reader (the reconciler's). Its errors in the domain's words: the
provider unreachable is ProviderUnavailable (retry), an intent it does not
know is a FailedPrecondition (nothing to compare with)."""

from __future__ import annotations

from payment_svc.domain.corrections import ProviderReversal
from payment_svc.domain.errors import FailedPrecondition, ProviderUnavailable
from payments_stripe.reader import NotFoundAtProvider, ProviderError, StripeReader
from payments_stripe.status import RefundState


class StripeBooks:
    def __init__(self, reader: StripeReader) -> None:
        self._reader = reader

    async def close(self) -> None:
        await self._reader.close()

    async def reversal_of(self, provider_payment_id: str) -> ProviderReversal:
        try:
            intent = await self._reader.retrieve_intent(provider_payment_id)
            refunds = await self._reader.refunds_of(provider_payment_id)
        except NotFoundAtProvider:
            raise FailedPrecondition(
                f"the provider does not know {provider_payment_id}: nothing to compare"
            ) from None
        except ProviderError as exc:
            raise ProviderUnavailable(f"the provider's books could not be read: {exc}") from None
        refunded = sum(r.amount for r in refunds if r.mapped is RefundState.SUCCEEDED)
        return ProviderReversal(refunded=refunded, disputed=intent.disputed)
