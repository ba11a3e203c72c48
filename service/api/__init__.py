"""The API processes: Flask under gunicorn (``gunicorn 'service.api.app:create_app()'``).

Everything HTTP is here and nothing else is: the front doors (`protocols`: the
service's own, TensorFlow Serving's, KServe's), their schemas, bodies and error
answers, the request hooks (request id, metrics, access log), probes, the
OpenAPI document, Swagger UI and the demo page. Scoring itself is the
framework-free `service.scoring.Scorer`'s.
"""
