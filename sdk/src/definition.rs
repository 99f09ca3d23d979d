//! Typed definitions: an activity, a workflow or a signal as a type that names it on the wire
//! and says what it carries, so that scheduling, starting, signalling and registering it are
//! checked at compile time.
//!
//! A definition is a unit struct and a trait impl, usually in a crate the workflow, its
//! activities and its clients share (the order saga's are in `martix-order-contract`):
//!
//! ```
//! use martix_sdk::{Activity, ActivityOptions, Signal, Workflow};
//! use std::time::Duration;
//!
//! /// Charges a card; returns the charge id.
//! pub struct ChargeCard;
//! impl Activity for ChargeCard {
//!     const NAME: &'static str = "charge_card";
//!     type Input = u64;
//!     type Output = String;
//!     fn options() -> ActivityOptions {
//!         ActivityOptions::new(Duration::from_secs(10)).maximum_attempts(5)
//!     }
//! }
//!
//! /// Approves a payment.
//! pub struct Approve;
//! impl Signal for Approve {
//!     const NAME: &'static str = "approve";
//!     type Payload = String;
//! }
//!
//! /// Charges after an approval.
//! pub struct Checkout;
//! impl Workflow for Checkout {
//!     const NAME: &'static str = "checkout";
//!     type Input = u64;
//!     type Output = String;
//! }
//! ```
//!
//! Then `ctx.activity(ChargeCard, &amount)`, `ctx.signal(Approve)`,
//! `worker.activity(ChargeCard, charge)`, `worker.workflow(Checkout, checkout)`,
//! `client.start(Checkout, options, &amount)` and `handle.signal(Approve, &who)` only compile
//! with the definition's types. The string forms (`activity_by_name`, `signal_by_name`,
//! `register_activity`, `start_workflow`, ...) remain, for activities and workflows written in
//! other languages.

use crate::workflow::ActivityOptions;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An activity type: its name, what it takes and gives back, and its default options.
pub trait Activity: Send + Sync + 'static {
    /// The activity type name: what workers register and workflows schedule.
    const NAME: &'static str;
    /// What it takes (JSON on the wire).
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What it gives back (JSON on the wire).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The options a call of this activity starts from. A field left unset here is the
    /// calling workflow's default ([`WorkflowContext::with_activity_defaults`]), which also
    /// overrides what is set here, and the call's own options
    /// ([`ActivityFuture::with_options`]) override both. Default: nothing set (the engine's
    /// defaults, see [`ActivityOptions`]).
    ///
    /// [`WorkflowContext::with_activity_defaults`]: crate::WorkflowContext::with_activity_defaults
    /// [`ActivityFuture::with_options`]: crate::workflow::ActivityFuture::with_options
    fn options() -> ActivityOptions {
        ActivityOptions::default()
    }
}

/// A workflow type: its name, what it is started with and what it completes with.
pub trait Workflow: Send + Sync + 'static {
    /// The workflow type name: what workers register and clients start.
    const NAME: &'static str;
    /// What it is started with (JSON on the wire).
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What it completes with (JSON on the wire).
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

/// A signal: its name and what it carries.
pub trait Signal: Send + Sync + 'static {
    /// The signal's name: what clients send and workflows wait for.
    const NAME: &'static str;
    /// What it carries (JSON on the wire).
    type Payload: Serialize + DeserializeOwned + Send + 'static;
}

/// A query: a question a workflow answers from its state without changing it.
///
/// The workflow registers a handler with [`WorkflowContext::on_query`]; clients ask with
/// [`WorkflowHandle::query`]. A handler is given the workflow's [`WorkflowState`] (read only)
/// and the arguments, and no context: it must only read (a command it issues fails the query).
///
/// ```
/// use martix_sdk::Query;
///
/// /// Where the checkout is.
/// pub struct Progress;
/// impl Query for Progress {
///     const NAME: &'static str = "progress";
///     type Args = ();
///     type Output = String;
/// }
/// ```
///
/// [`WorkflowContext::on_query`]: crate::WorkflowContext::on_query
/// [`WorkflowHandle::query`]: crate::WorkflowHandle::query
/// [`WorkflowState`]: crate::WorkflowState
pub trait Query: Send + Sync + 'static {
    /// The query's name: what clients ask and workflows answer.
    const NAME: &'static str;
    /// What it is asked with (JSON on the wire; `()` for nothing).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What it answers (JSON on the wire).
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

/// An update: a change a caller asks of a running workflow, which its validator may refuse
/// (nothing is recorded then) and its handler carries out, activities and all, answering the
/// caller with the result.
///
/// The workflow registers both with [`WorkflowContext::on_update`]; clients ask with
/// [`WorkflowHandle::update`].
///
/// ```
/// use martix_sdk::Update;
///
/// /// Moves the delivery to another address.
/// pub struct ChangeAddress;
/// impl Update for ChangeAddress {
///     const NAME: &'static str = "change_address";
///     type Args = String;
///     type Output = String;
/// }
/// ```
///
/// [`WorkflowContext::on_update`]: crate::WorkflowContext::on_update
/// [`WorkflowHandle::update`]: crate::WorkflowHandle::update
pub trait Update: Send + Sync + 'static {
    /// The update's name: what clients ask and workflows handle.
    const NAME: &'static str;
    /// What it is asked with (JSON on the wire).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What its handler answers (JSON on the wire).
    type Output: Serialize + DeserializeOwned + Send + 'static;
}
