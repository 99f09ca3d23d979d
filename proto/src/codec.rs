//! The gRPC codec of `martix.v1`: prost, except that a message that does not decode is the
//! sender's fault (INVALID_ARGUMENT) rather than a server failure (INTERNAL, tonic's default),
//! and that buffers are sized to the message rather than 8 KiB each.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder};

/// The buffer a request or response starts with (tonic's default is 8 KiB). Most of this
/// protocol's messages are a few hundred bytes; every unary call allocates four such buffers
/// (each side encodes one message and decodes one), so 8 KiB each was most of the memory a
/// call touched. A message that does not fit is reserved for whole before it is encoded (one
/// reallocation at most), and the decoder reserves each arriving message's length.
const BUFFER_SIZE: usize = 1024;
/// tonic's default: a streaming body yields after this much is buffered.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

/// prost encoding; decode errors are `InvalidArgument`.
pub struct Codec<T, U> {
    _pd: PhantomData<fn() -> (T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = InvalidArgumentDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder { _pd: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidArgumentDecoder {
            inner: ProstCodec::<T, U>::raw_decoder(buffer_settings()),
            _pd: PhantomData,
        }
    }
}

/// prost's encoder, reserving the message's length before it writes.
pub struct SizedEncoder<T> {
    _pd: PhantomData<T>,
}

impl<T: prost::Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

/// prost's decoder with its errors reported as `InvalidArgument`.
pub struct InvalidArgumentDecoder<U> {
    inner: ProstDecoder<U>,
    _pd: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for InvalidArgumentDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|s| {
            if s.code() == Code::Internal {
                Status::invalid_argument(format!("malformed request: {}", s.message()))
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
