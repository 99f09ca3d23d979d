//! A signal sent from a client with a payload of another type than its definition's.

use martix_sdk::{Signal, WorkflowHandle};

struct Approve;
impl Signal for Approve {
    const NAME: &'static str = "approve";
    type Payload = String;
}

async fn approve(run: WorkflowHandle) {
    run.signal(Approve, &42).await.unwrap();
}

fn main() {
    let _ = approve;
}
