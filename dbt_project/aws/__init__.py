"""What runs only in AWS Lambda: the handlers' work, their events, the resources a
function is made of (logins by secret or IAM token, the S3 stage), Powertools, and the
history load the initializer starts.

Nothing is re-exported here: importing a handler module creates Powertools' logger,
metrics and tracer, which the rest of the package must not pay for."""
