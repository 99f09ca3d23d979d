//! Queries from the workflow's side: the state it shares with its handlers
//! ([`WorkflowState`]) and registering a handler ([`WorkflowContext::on_query`]).

use super::WorkflowContext;
use super::driver::{QueryFailure, QueryHandler};
use crate::definition::Query;
use crate::payload::{from_payload, to_payload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};

/// State a workflow shares with its query handlers ([`WorkflowContext::on_query`]): the
/// workflow changes it with [`WorkflowState::update`], a handler reads it. Cloning gives
/// another handle on the same state.
pub struct WorkflowState<S>(Arc<Mutex<S>>);

impl<S> Clone for WorkflowState<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S> WorkflowState<S> {
    /// State starting at `initial`.
    pub fn new(initial: S) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    /// Changes the state.
    pub fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the state if no one holds it: `None` when a reader is inside `update` (a
    /// handler that changes the state it reads would otherwise wait on itself for ever).
    pub(crate) fn try_read<R>(&self, f: impl FnOnce(&S) -> R) -> Option<R> {
        match self.0.try_lock() {
            Ok(s) => Some(f(&s)),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(f(&p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

impl<S: Clone> WorkflowState<S> {
    /// A copy of the state.
    pub fn get(&self) -> S {
        self.read(S::clone)
    }
}

impl WorkflowContext {
    /// Answers query `Q` from now on with `handler`, called with `state` (read only) and the
    /// query's arguments. A handler is given no context and must only read: a command it
    /// issues anyway (through a captured context) fails the query, and nothing it does reaches
    /// the run. It is called on a replay of the run (a worker replays the
    /// history for each query), with the state as it was after the run's last completed
    /// workflow task. Registering `Q` again replaces its handler; register early (at the top of
    /// the workflow), as a query asked before the registration finds no handler.
    ///
    /// ```
    /// # use martix_sdk::{Query, WorkflowContext, WorkflowError, WorkflowState};
    /// # use std::time::Duration;
    /// struct Progress;
    /// impl Query for Progress {
    ///     const NAME: &'static str = "progress";
    ///     type Args = ();
    ///     type Output = String;
    /// }
    ///
    /// async fn checkout(ctx: WorkflowContext, _: ()) -> Result<(), WorkflowError> {
    ///     let step = WorkflowState::new(String::from("waiting"));
    ///     ctx.on_query(Progress, &step, |step, ()| step.clone());
    ///     ctx.sleep(Duration::from_secs(60)).await;
    ///     step.update(|s| *s = "charging".into());
    ///     Ok(())
    /// }
    /// ```
    pub fn on_query<Q: Query, S: Send + 'static>(
        &self,
        _query: Q,
        state: &WorkflowState<S>,
        handler: impl Fn(&S, Q::Args) -> Q::Output + Send + Sync + 'static,
    ) {
        self.on_query_by_name(Q::NAME, state, handler);
    }

    /// The string form of [`WorkflowContext::on_query`]: the query by its name, the arguments
    /// decoded as `A`.
    pub fn on_query_by_name<S, A, O>(
        &self,
        name: &str,
        state: &WorkflowState<S>,
        handler: impl Fn(&S, A) -> O + Send + Sync + 'static,
    ) where
        S: Send + 'static,
        A: DeserializeOwned,
        O: Serialize,
    {
        let state = state.clone();
        let query = name.to_owned();
        let handler: QueryHandler = Arc::new(move |args| {
            let args: A = from_payload(args).map_err(|e| {
                QueryFailure::new(
                    "InvalidQueryArgs",
                    format!("the arguments of query '{query}' do not decode: {e}"),
                )
            })?;
            let answer = state.try_read(|s| handler(s, args)).ok_or_else(|| {
                QueryFailure::new(
                    "QueryFailed",
                    format!("query handler '{query}' changed the state it reads"),
                )
            })?;
            to_payload(&answer).map_err(|e| {
                QueryFailure::new(
                    "QueryFailed",
                    format!("the answer of query '{query}' does not encode: {e}"),
                )
            })
        });
        self.state().queries.insert(name.to_owned(), handler);
    }
}
