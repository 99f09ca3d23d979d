//! Schedules from a client (an operator's calls): a workflow started at each time of a cron
//! expression or an interval. The schedule is described by the engine's own messages
//! (`martix_sdk::proto::Schedule`): it is the operators' interface, as the CLI uses it.

use super::Client;
use crate::error::ClientError;
use martix_proto::v1 as pb;

impl Client {
    /// Creates schedule `id` in this client's namespace.
    pub async fn create_schedule(
        &self,
        id: &str,
        schedule: pb::Schedule,
    ) -> Result<(), ClientError> {
        self.inner
            .clone()
            .create_schedule(pb::CreateScheduleRequest {
                namespace: self.namespace.clone(),
                schedule_id: id.to_owned(),
                schedule: Some(schedule),
                identity: self.identity.clone(),
            })
            .await?;
        Ok(())
    }

    /// Schedule `id`, what it did lately and its next times.
    pub async fn describe_schedule(
        &self,
        id: &str,
    ) -> Result<pb::DescribeScheduleResponse, ClientError> {
        Ok(self
            .inner
            .clone()
            .describe_schedule(pb::DescribeScheduleRequest {
                namespace: self.namespace.clone(),
                schedule_id: id.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Every schedule of this client's namespace, by id.
    pub async fn list_schedules(&self) -> Result<Vec<pb::ScheduleListEntry>, ClientError> {
        let mut all = Vec::new();
        let mut token = Vec::new();
        loop {
            let page = self
                .inner
                .clone()
                .list_schedules(pb::ListSchedulesRequest {
                    namespace: self.namespace.clone(),
                    page_size: 1000,
                    next_page_token: token,
                })
                .await?
                .into_inner();
            all.extend(page.schedules);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// Pauses, resumes, triggers or backfills a schedule (`request` names it; its namespace
    /// and identity are this client's); the actions taken.
    pub async fn patch_schedule(
        &self,
        mut request: pb::PatchScheduleRequest,
    ) -> Result<Vec<pb::ScheduleActionRecord>, ClientError> {
        request.namespace.clone_from(&self.namespace);
        request.identity.clone_from(&self.identity);
        Ok(self
            .inner
            .clone()
            .patch_schedule(request)
            .await?
            .into_inner()
            .actions)
    }

    /// Deletes schedule `id`; the runs it started go on.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), ClientError> {
        self.inner
            .clone()
            .delete_schedule(pb::DeleteScheduleRequest {
                namespace: self.namespace.clone(),
                schedule_id: id.to_owned(),
            })
            .await?;
        Ok(())
    }
}
