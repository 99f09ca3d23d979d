//! An activity scheduled with an input of another type than its definition's.

use martix_sdk::{Activity, WorkflowContext, WorkflowError};

struct ChargeCard;
impl Activity for ChargeCard {
    const NAME: &'static str = "charge_card";
    type Input = u64;
    type Output = String;
}

async fn checkout(ctx: WorkflowContext, card: String) -> Result<String, WorkflowError> {
    Ok(ctx.activity(ChargeCard, &card).await?)
}

fn main() {
    let _ = checkout;
}
