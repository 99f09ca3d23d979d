//! gRPC server reflection, `grpc.reflection.v1` and `v1alpha` (which many tools still speak:
//! Python's `grpcio-reflection`, older grpcurl, GUI clients). A file is answered with every file
//! it imports, transitively, each sent once per stream, so a client can build the descriptors
//! from one answer; a symbol or file that is not there is an `ErrorResponse` on the stream
//! (NOT_FOUND), which leaves the stream open, as the protocol says.

use futures::{Stream, StreamExt};
use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::{v1, v1alpha};
use v1::server_reflection_request::MessageRequest;
use v1::server_reflection_response::MessageResponse;

/// One file: its encoded descriptor and the files it imports.
struct File {
    raw: Vec<u8>,
    imports: Vec<String>,
}

/// What reflection answers from: files by name, the file declaring each symbol, the services.
#[derive(Default)]
struct Catalog {
    files: HashMap<String, File>,
    symbols: HashMap<String, String>,
    services: Vec<String>,
}

impl Catalog {
    fn add_set(&mut self, encoded: &[u8]) -> Result<(), String> {
        let set = FileDescriptorSet::decode(encoded).map_err(|e| format!("descriptor set: {e}"))?;
        for file in set.file {
            let name = file.name().to_owned();
            // The first registration of a file wins (sets share their imports).
            if self.files.contains_key(&name) {
                continue;
            }
            let package = file.package().to_owned();
            let scoped = |n: &str| {
                if package.is_empty() {
                    n.to_owned()
                } else {
                    format!("{package}.{n}")
                }
            };
            for m in &file.message_type {
                self.add_message(&name, &scoped(m.name()), m);
            }
            for e in &file.enum_type {
                self.add_enum(&name, &scoped(e.name()), e);
            }
            for s in &file.service {
                let service = scoped(s.name());
                for m in &s.method {
                    self.symbols
                        .insert(format!("{service}.{}", m.name()), name.clone());
                }
                self.symbols.insert(service.clone(), name.clone());
                self.services.push(service);
            }
            let imports = file.dependency.clone();
            self.files.insert(
                name,
                File {
                    raw: file.encode_to_vec(),
                    imports,
                },
            );
        }
        Ok(())
    }

    fn add_message(&mut self, file: &str, full: &str, m: &DescriptorProto) {
        self.symbols.insert(full.to_owned(), file.to_owned());
        for f in &m.field {
            self.symbols
                .insert(format!("{full}.{}", f.name()), file.to_owned());
        }
        for n in &m.nested_type {
            self.add_message(file, &format!("{full}.{}", n.name()), n);
        }
        for e in &m.enum_type {
            self.add_enum(file, &format!("{full}.{}", e.name()), e);
        }
    }

    fn add_enum(&mut self, file: &str, full: &str, e: &EnumDescriptorProto) {
        self.symbols.insert(full.to_owned(), file.to_owned());
        // Enum values are scoped like their enum's siblings (C++ scoping rules).
        let parent = full.rsplit_once('.').map_or("", |(p, _)| p);
        for v in &e.value {
            let value = if parent.is_empty() {
                v.name().to_owned()
            } else {
                format!("{parent}.{}", v.name())
            };
            self.symbols.insert(value, file.to_owned());
        }
    }

    /// `name` and what it imports, transitively: `name` always (a client may ask again), each
    /// import once per stream (`sent`).
    fn with_imports(&self, name: &str, sent: &mut HashSet<String>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut todo = vec![name.to_owned()];
        while let Some(n) = todo.pop() {
            let fresh = sent.insert(n.clone());
            let Some(file) = self.files.get(&n) else {
                continue;
            };
            if fresh || out.is_empty() {
                out.push(file.raw.clone());
                todo.extend(file.imports.iter().rev().cloned());
            }
        }
        out
    }

    fn answer(
        &self,
        req: v1::ServerReflectionRequest,
        sent: &mut HashSet<String>,
    ) -> v1::ServerReflectionResponse {
        let not_found = |what: String| {
            MessageResponse::ErrorResponse(v1::ErrorResponse {
                error_code: tonic::Code::NotFound as i32,
                error_message: what,
            })
        };
        let files = |f: Vec<Vec<u8>>| {
            MessageResponse::FileDescriptorResponse(v1::FileDescriptorResponse {
                file_descriptor_proto: f,
            })
        };
        let message = match &req.message_request {
            None => MessageResponse::ErrorResponse(v1::ErrorResponse {
                error_code: tonic::Code::InvalidArgument as i32,
                error_message: "the request asks nothing".into(),
            }),
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServicesResponse(v1::ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|s| v1::ServiceResponse { name: s.clone() })
                        .collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => {
                if self.files.contains_key(name) {
                    files(self.with_imports(name, sent))
                } else {
                    not_found(format!("file '{name}' not found"))
                }
            }
            Some(MessageRequest::FileContainingSymbol(symbol)) => {
                match self.symbols.get(symbol.trim_start_matches('.')) {
                    Some(file) => files(self.with_imports(file, sent)),
                    None => not_found(format!("symbol '{symbol}' not found")),
                }
            }
            // No extensions are declared: an empty answer, which tools such as grpcurl expect
            // rather than an error.
            Some(MessageRequest::AllExtensionNumbersOfType(t)) => {
                MessageResponse::AllExtensionNumbersResponse(v1::ExtensionNumberResponse {
                    base_type_name: t.clone(),
                    extension_number: Vec::new(),
                })
            }
            Some(MessageRequest::FileContainingExtension(e)) => not_found(format!(
                "no extension {} of '{}'",
                e.extension_number, e.containing_type
            )),
        };
        v1::ServerReflectionResponse {
            valid_host: req.host.clone(),
            original_request: Some(req),
            message_response: Some(message),
        }
    }
}

/// The reflection services (both versions) over the given descriptor sets.
#[derive(Clone)]
pub struct Reflection(Arc<Catalog>);

impl Reflection {
    /// Serves the files of `sets` (encoded `FileDescriptorSet`s), reflection's own and
    /// health's.
    pub fn new(sets: &[&[u8]]) -> Result<Self, String> {
        let mut catalog = Catalog::default();
        for set in sets.iter().chain(&[
            v1::FILE_DESCRIPTOR_SET,
            v1alpha::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]) {
            catalog.add_set(set)?;
        }
        catalog.services.sort();
        catalog.services.dedup();
        Ok(Self(Arc::new(catalog)))
    }

    /// `grpc.reflection.v1.ServerReflection`.
    pub fn v1(&self) -> v1::server_reflection_server::ServerReflectionServer<Self> {
        v1::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    /// `grpc.reflection.v1alpha.ServerReflection`.
    pub fn v1alpha(&self) -> v1alpha::server_reflection_server::ServerReflectionServer<Self> {
        v1alpha::server_reflection_server::ServerReflectionServer::new(self.clone())
    }

    /// Answers each request of `requests` in turn; `Req` and `Resp` are either version's
    /// messages, which are the same on the wire.
    fn stream<Req, Resp>(
        &self,
        requests: Streaming<Req>,
    ) -> Pin<Box<dyn Stream<Item = Result<Resp, Status>> + Send>>
    where
        Req: Message + Default + Send + 'static,
        Resp: Message + Default + Send + 'static,
    {
        let catalog = self.0.clone();
        let mut sent = HashSet::new();
        Box::pin(requests.map(move |req| {
            let req = v1::ServerReflectionRequest::decode(req?.encode_to_vec().as_slice())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let resp = catalog.answer(req, &mut sent);
            Resp::decode(resp.encode_to_vec().as_slice())
                .map_err(|e| Status::internal(e.to_string()))
        }))
    }
}

type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl v1::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        req: Request<Streaming<v1::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(self.stream(req.into_inner())))
    }
}

#[tonic::async_trait]
impl v1alpha::server_reflection_server::ServerReflection for Reflection {
    type ServerReflectionInfoStream = Answers<v1alpha::ServerReflectionResponse>;

    async fn server_reflection_info(
        &self,
        req: Request<Streaming<v1alpha::ServerReflectionRequest>>,
    ) -> Result<Response<Self::ServerReflectionInfoStream>, Status> {
        Ok(Response::new(self.stream(req.into_inner())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(r: &Reflection, m: MessageRequest, sent: &mut HashSet<String>) -> MessageResponse {
        r.0.answer(
            v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            },
            sent,
        )
        .message_response
        .unwrap()
    }

    fn names(resp: MessageResponse) -> Vec<String> {
        let MessageResponse::FileDescriptorResponse(f) = resp else {
            panic!("{resp:?}")
        };
        f.file_descriptor_proto
            .iter()
            .map(|raw| {
                prost_types::FileDescriptorProto::decode(raw.as_slice())
                    .unwrap()
                    .name()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn a_file_comes_with_its_imports_once_per_stream() {
        let r = Reflection::new(&[martix_proto::FILE_DESCRIPTOR_SET]).unwrap();
        let mut sent = HashSet::new();
        let first = names(ask(
            &r,
            MessageRequest::FileContainingSymbol("martix.v1.WorkflowService".into()),
            &mut sent,
        ));
        assert_eq!(first[0], "martix/v1/workflow_service.proto");
        for import in [
            "martix/v1/common.proto",
            "martix/v1/history.proto",
            "google/protobuf/timestamp.proto",
        ] {
            assert!(first.iter().any(|n| n == import), "{import} in {first:?}");
        }
        // Asked again on the same stream: the file, not its imports again.
        let again = names(ask(
            &r,
            MessageRequest::FileByFilename("martix/v1/workflow_service.proto".into()),
            &mut sent,
        ));
        assert_eq!(again, ["martix/v1/workflow_service.proto"]);
        // A method, a nested message's field and an enum value name their file too.
        for symbol in [
            "martix.v1.WorkflowService.StartWorkflow",
            ".martix.v1.StartWorkflowRequest",
        ] {
            let files = names(ask(
                &r,
                MessageRequest::FileContainingSymbol(symbol.into()),
                &mut HashSet::new(),
            ));
            assert_eq!(files[0], "martix/v1/workflow_service.proto", "{symbol}");
        }
    }

    #[test]
    fn what_is_not_there_is_an_error_on_the_stream() {
        let r = Reflection::new(&[martix_proto::FILE_DESCRIPTOR_SET]).unwrap();
        let resp = ask(
            &r,
            MessageRequest::FileContainingSymbol("martix.v1.Nope".into()),
            &mut HashSet::new(),
        );
        let MessageResponse::ErrorResponse(e) = resp else {
            panic!("{resp:?}")
        };
        assert_eq!(e.error_code, tonic::Code::NotFound as i32);
        assert_eq!(e.error_message, "symbol 'martix.v1.Nope' not found");
        let MessageResponse::ListServicesResponse(l) = ask(
            &r,
            MessageRequest::ListServices(String::new()),
            &mut HashSet::new(),
        ) else {
            panic!()
        };
        let services: Vec<&str> = l.service.iter().map(|s| s.name.as_str()).collect();
        for s in [
            "martix.v1.WorkflowService",
            "martix.v1.WorkerService",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "grpc.health.v1.Health",
        ] {
            assert!(services.contains(&s), "{s} in {services:?}");
        }
    }
}
