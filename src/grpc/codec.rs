//! The protobuf codec of every balagh service: prost's, except that a request that cannot be
//! decoded (truncated, invalid UTF-8 in a string, a wrong wire type) is `INVALID_ARGUMENT`
//! with reason `MALFORMED_MESSAGE` and the usual single `ErrorInfo`, instead of tonic's bare
//! `INTERNAL`: the fault is the caller's, and the caller should be told so precisely.

use std::collections::HashMap;
use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::error::status;

#[derive(Debug, Clone)]
pub struct BalaghCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BalaghCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for BalaghCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        // 1 KiB allocated per call rather than 8 KiB: with thousands of watch streams open the
        // encode buffers are most of their memory. Larger messages grow it as needed.
        ProstEncoder::new(BufferSettings::new(1024, 8 * 1024))
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

#[derive(Debug)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|error| {
            tracing::debug!(error = %error.message(), "malformed request message");
            status(
                Code::InvalidArgument,
                "MALFORMED_MESSAGE",
                "the request is not a valid protobuf message of this method",
                HashMap::new(),
                &[],
            )
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// A protobuf message already encoded: WatchTickets encodes each change once and sends the
/// same bytes to every stream that follows it.
#[derive(Debug, Clone)]
pub struct EncodedMessage(Bytes);

impl EncodedMessage {
    pub fn new(bytes: Bytes) -> Self {
        Self(bytes)
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

/// The codec of a method whose responses are [`EncodedMessage`]s (WatchTickets, ListTickets):
/// requests are decoded as by [`BalaghCodec`], responses are copied into the frame as they
/// are.
#[derive(Debug, Clone)]
pub struct PreEncodedCodec<U> {
    _request: PhantomData<U>,
}

impl<U> Default for PreEncodedCodec<U> {
    fn default() -> Self {
        Self {
            _request: PhantomData,
        }
    }
}

impl<U> Codec for PreEncodedCodec<U>
where
    U: Message + Default + Send + 'static,
{
    type Encode = EncodedMessage;
    type Decode = U;
    type Encoder = PreEncodedEncoder;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

#[derive(Debug)]
pub struct PreEncodedEncoder;

impl Encoder for PreEncodedEncoder {
    type Item = EncodedMessage;
    type Error = Status;

    fn encode(&mut self, item: EncodedMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        // As BalaghCodec's encoder: small per-stream buffers, since thousands of streams are open.
        BufferSettings::new(1024, 8 * 1024)
    }
}
