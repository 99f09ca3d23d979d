//! The handlers a workflow registers and the driver calls outside its code's own flow: query
//! handlers and update validators (read only: a command they issue fails them) and update
//! handlers (futures the driver runs beside the workflow's).

use super::*;

impl RunDriver {
    /// Answers query `name` with the state the workflow has now (after the activations
    /// applied), calling its handler; the workflow issues nothing meanwhile.
    pub(crate) fn query(
        &mut self,
        name: &str,
        args: Option<&pb::Payload>,
    ) -> Result<pb::Payload, QueryFailure> {
        let handler = {
            let s = self.shared();
            let Some(handler) = s.queries.get(name).cloned() else {
                return Err(self.unknown("query", "answers", name, s.queries.keys()));
            };
            handler
        };
        self.read_only(&format!("query handler '{name}'"), || handler(args))
    }

    /// Asks the validator of update `name` whether it accepts `args`, on the state the
    /// workflow has now; the workflow issues nothing meanwhile.
    pub(crate) fn validate_update(
        &mut self,
        name: &str,
        args: Option<&pb::Payload>,
    ) -> Result<(), QueryFailure> {
        let handler = {
            let s = self.shared();
            let Some(handler) = s.updates.get(name).cloned() else {
                return Err(self.unknown("update", "handles", name, s.updates.keys()));
            };
            handler
        };
        self.read_only(&format!("the validator of update '{name}'"), || {
            (handler.validate)(args)
        })
    }

    /// Says the workflow has no `kind` (query or update) handler `name`, naming those it
    /// has (what it `does`).
    pub(super) fn unknown<'a>(
        &self,
        kind: &str,
        does: &str,
        name: &str,
        known: impl Iterator<Item = &'a String>,
    ) -> QueryFailure {
        let mut known: Vec<&str> = known.map(String::as_str).collect();
        known.sort_unstable();
        QueryFailure::new(
            if kind == "query" {
                "UnknownQuery"
            } else {
                "UnknownUpdate"
            },
            format!(
                "workflow '{}' has no {kind} handler '{name}' (it {does}: {})",
                self.info.workflow_type,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    }

    /// Calls `f` (a query handler, a validator: `what`) so that it can only read: a command
    /// it issues fails it, as does a panic.
    pub(super) fn read_only<T>(
        &mut self,
        what: &str,
        f: impl FnOnce() -> Result<T, QueryFailure>,
    ) -> Result<T, QueryFailure> {
        self.shared().answering_query = true;
        // Called outside the lock: the handler may read the context.
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let mut s = self.shared();
        s.answering_query = false;
        if let Some(command) = s.command_in_query.take() {
            return Err(QueryFailure::new(
                "QueryFailed",
                format!("{what} issued {command}; it may only read the workflow's state"),
            ));
        }
        match answer {
            Ok(answer) => answer,
            Err(panic) => Err(QueryFailure::new(
                "QueryFailed",
                format!("{what} panicked: {}", panic_message(&*panic)),
            )),
        }
    }

    /// Starts the handler of an accepted update (after its validator, for an update sent
    /// with a start); an update the workflow cannot handle completes with why.
    pub(super) fn start_update(&mut self, a: pb::WorkflowUpdateAcceptedAttributes) {
        let handler = self.shared().updates.get(&a.update_name).cloned();
        let refused = match &handler {
            None => Some(
                self.unknown(
                    "update",
                    "handles",
                    &a.update_name,
                    self.shared()
                        .updates
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .iter(),
                ),
            ),
            Some(h) if a.validate => {
                let what = format!("the validator of update '{}'", a.update_name);
                self.read_only(&what, || (h.validate)(a.args.as_ref()))
                    .err()
            }
            Some(_) => None,
        };
        match (handler, refused) {
            (Some(h), None) => {
                let ctx = WorkflowContext::new(self.shared.clone(), self.info.clone());
                let run = (h.run)(ctx, a.args);
                self.handlers.push((a.update_id, run));
            }
            (_, refused) => {
                let f = refused.unwrap_or_else(|| QueryFailure::new("UnknownUpdate", ""));
                self.complete_update(
                    a.update_id,
                    Err(pb::Failure {
                        message: f.message,
                        r#type: f.kind.to_owned(),
                        non_retryable: true,
                        ..Default::default()
                    }),
                );
            }
        }
    }

    /// Polls the running update handlers once each, in order; a finished one completes its
    /// update.
    pub(super) fn poll_updates(&mut self, cx: &mut Context<'_>) -> Result<(), ActivationError> {
        let mut i = 0;
        while i < self.handlers.len() {
            let fut = &mut self.handlers[i].1;
            let polled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx)))
                    .map_err(|panic| ActivationError::Panic(panic_message(&*panic)))?;
            match polled {
                Poll::Pending => i += 1,
                Poll::Ready(out) => {
                    let (id, _) = self.handlers.remove(i);
                    self.complete_update(id, out.map_err(|e| e.to_failure()));
                }
            }
        }
        Ok(())
    }

    pub(super) fn complete_update(
        &mut self,
        update_id: String,
        out: Result<pb::Payload, pb::Failure>,
    ) {
        let (result, failure) = match out {
            Ok(p) => (Some(p), None),
            Err(f) => (None, Some(f)),
        };
        self.shared()
            .push_command(C::CompleteUpdate(pb::CompleteUpdateCommand {
                update_id,
                result,
                failure,
            }));
    }
}
