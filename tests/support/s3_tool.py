#!/usr/bin/env python3
"""Seeds the S3 server of chunkd's tests (tests/support/s3_server.hpp) with a real client.

  s3_tool.py init ENDPOINT                      -> prints "ACCESS_KEY_ID SECRET" of a new IAM user
                                                   allowed everything (the server's first actions
                                                   are unsigned; after them it checks signatures)
  s3_tool.py bucket ENDPOINT ID SECRET BUCKET   -> creates a versioned bucket
  s3_tool.py put ENDPOINT ID SECRET BUCKET KEY FILE [KEY FILE ...]
                                                -> uploads each FILE in order, prints the new
                                                   version ids, one a line
  s3_tool.py get ENDPOINT ID SECRET BUCKET KEY FILE
                                                -> writes the latest version of KEY to FILE
  s3_tool.py versions ENDPOINT ID SECRET BUCKET KEY
                                                -> prints how many versions of KEY exist
"""
import json
import sys

import boto3
from botocore.config import Config

REGION = "us-east-1"


def client(service, endpoint, key_id="unsigned", secret="unsigned"):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


def main(argv):
    cmd, endpoint = argv[1], argv[2]
    if cmd == "init":
        iam = client("iam", endpoint)
        iam.create_user(UserName="chunkd")
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="chunkd", PolicyName="all",
                            PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="chunkd")["AccessKey"]
        print(key["AccessKeyId"], key["SecretAccessKey"])
        return 0
    key_id, secret, bucket = argv[3], argv[4], argv[5]
    s3 = client("s3", endpoint, key_id, secret)
    if cmd == "bucket":
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return 0
    if cmd == "put":
        pairs = argv[6:]
        for key, path in zip(pairs[0::2], pairs[1::2]):
            with open(path, "rb") as f:
                answer = s3.put_object(Bucket=bucket, Key=key, Body=f)
            print(answer.get("VersionId", ""))
        return 0
    if cmd == "get":
        answer = s3.get_object(Bucket=bucket, Key=argv[6])
        with open(argv[7], "wb") as f:
            f.write(answer["Body"].read())
        return 0
    if cmd == "versions":
        # No Prefix: moto refuses a signed query holding %2F (see s3_server.hpp); the test
        # buckets are small, so list them whole.
        listed = s3.list_object_versions(Bucket=bucket)
        print(sum(1 for v in listed.get("Versions", []) if v["Key"] == argv[6]))
        return 0
    print("unknown command " + cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
