"""The CDK app that deploys the nightly ETL: one construct per concern, one stack."""
