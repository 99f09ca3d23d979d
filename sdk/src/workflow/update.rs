//! Updates from the workflow's side: registering a validator and a handler
//! ([`WorkflowContext::on_update`]).

use super::WorkflowContext;
use super::driver::{QueryFailure, UpdateHandler};
use super::query::WorkflowState;
use crate::definition::Update;
use crate::error::WorkflowError;
use crate::payload::{from_payload, to_payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;

impl WorkflowContext {
    /// Handles update `U` from now on. `validator` is asked first, with the state (read only)
    /// and the arguments, on a worker replaying the run: `Err(reason)` refuses the update and
    /// nothing is recorded; the caller hears the reason. An accepted update is recorded and
    /// `handler` runs in the workflow, beside its code, with a context (it may run activities,
    /// sleep, wait for signals), the state and the arguments; its result answers the caller.
    /// Register early (at the top of the workflow): an update asked before finds no handler.
    ///
    /// ```
    /// # use martix_sdk::{Update, WorkflowContext, WorkflowError, WorkflowState};
    /// # use std::time::Duration;
    /// struct ChangeAddress;
    /// impl Update for ChangeAddress {
    ///     const NAME: &'static str = "change_address";
    ///     type Args = String;
    ///     type Output = String;
    /// }
    ///
    /// async fn delivery(ctx: WorkflowContext, address: String) -> Result<String, WorkflowError> {
    ///     let state = WorkflowState::new((address, false)); // (address, shipped)
    ///     ctx.on_update(
    ///         ChangeAddress,
    ///         &state,
    ///         |(_, shipped), new| match (shipped, new.is_empty()) {
    ///             (true, _) => Err("the parcel left".into()),
    ///             (_, true) => Err("an address is needed".into()),
    ///             _ => Ok(()),
    ///         },
    ///         |_ctx, state, new: String| async move {
    ///             state.update(|(a, _)| *a = new.clone());
    ///             Ok(new)
    ///         },
    ///     );
    ///     ctx.sleep(Duration::from_secs(3600)).await;
    ///     Ok(state.update(|(a, shipped)| {
    ///         *shipped = true;
    ///         a.clone()
    ///     }))
    /// }
    /// ```
    pub fn on_update<U, S, V, H, F>(
        &self,
        _update: U,
        state: &WorkflowState<S>,
        validator: V,
        handler: H,
    ) where
        U: Update,
        S: Send + 'static,
        V: Fn(&S, &U::Args) -> Result<(), String> + Send + Sync + 'static,
        H: Fn(WorkflowContext, WorkflowState<S>, U::Args) -> F + Send + Sync + 'static,
        F: Future<Output = Result<U::Output, WorkflowError>> + Send + 'static,
    {
        self.on_update_by_name(U::NAME, state, validator, handler);
    }

    /// The string form of [`WorkflowContext::on_update`]: the update by its name, the
    /// arguments decoded as `A`.
    pub fn on_update_by_name<S, A, O, V, H, F>(
        &self,
        name: &str,
        state: &WorkflowState<S>,
        validator: V,
        handler: H,
    ) where
        S: Send + 'static,
        A: DeserializeOwned + Send + 'static,
        O: Serialize,
        V: Fn(&S, &A) -> Result<(), String> + Send + Sync + 'static,
        H: Fn(WorkflowContext, WorkflowState<S>, A) -> F + Send + Sync + 'static,
        F: Future<Output = Result<O, WorkflowError>> + Send + 'static,
    {
        let update = name.to_owned();
        let checked = state.clone();
        let validate = Arc::new(move |args: Option<&martix_proto::v1::Payload>| {
            let args: A = from_payload(args).map_err(|e| {
                QueryFailure::new(
                    "InvalidUpdateArgs",
                    format!("the arguments of update '{update}' do not decode: {e}"),
                )
            })?;
            checked
                .try_read(|s| validator(s, &args))
                .ok_or_else(|| {
                    QueryFailure::new(
                        "QueryFailed",
                        format!("the validator of update '{update}' changed the state it reads"),
                    )
                })?
                .map_err(|reason| QueryFailure::new("Rejected", reason))
        });
        let state = state.clone();
        let handler = Arc::new(handler);
        let run = Arc::new(
            move |ctx: WorkflowContext, args: Option<martix_proto::v1::Payload>| {
                let (state, handler) = (state.clone(), handler.clone());
                let fut: futures::future::BoxFuture<'static, _> = Box::pin(async move {
                    let args: A = from_payload(args.as_ref())?;
                    let out = handler(ctx, state, args).await?;
                    Ok(to_payload(&out)?)
                });
                fut
            },
        );
        self.state()
            .updates
            .insert(name.to_owned(), UpdateHandler { validate, run });
    }
}
