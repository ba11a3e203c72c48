"""Every JSON body the HTTP API takes or gives, as pydantic models, one module per protocol: `native` (the service's
own routes), `tfserving` (TensorFlow Serving's REST API), `kserve` (KServe's Open Inference Protocol v2); `common`
holds what they share."""
