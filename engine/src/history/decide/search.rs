//! `UpsertSearchAttributes`: the workflow sets values `ListWorkflows`' query finds it by.

use super::*;

pub(super) fn upsert(
    t: &mut Transition,
    c: &pb::UpsertSearchAttributesCommand,
    completed: i64,
) -> Result<(), String> {
    crate::visibility::check_attributes(&c.attributes, &t.run().state.search_attributes)?;
    t.append(Attributes::UpsertSearchAttributes(
        pb::UpsertSearchAttributesAttributes {
            attributes: c.attributes.clone(),
            workflow_task_completed_event_id: completed,
        },
    ));
    let mut sorted: Vec<_> = c.attributes.clone().into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    t.set_search_attributes(sorted);
    Ok(())
}
