"""`classify` on errors without a path: a variable that did not coerce is the client's bad input, but
what a subscription's generator raised mid-stream (strawberry wraps it with no path) is ours, masked."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from api.graphql_view import classify
from graphql import GraphQLError


def test_a_database_error_raised_mid_stream_is_internal_and_masked() -> None:
    db_error = IntegrityError("INSERT INTO change_log ...", {}, Exception("UNIQUE constraint failed"))
    classified = classify(GraphQLError(str(db_error), original_error=db_error))
    assert classified.extensions == {"code": "INTERNAL_SERVER_ERROR"}
    assert "change_log" not in classified.message and "UNIQUE" not in classified.message


def test_a_variable_whose_scalar_refused_it_is_still_bad_user_input() -> None:
    refused = ValueError("Invalid isoformat string: 'x'")
    error = GraphQLError("Variable '$from' got invalid value 'x'; " + str(refused), original_error=refused)
    assert classify(error).extensions == {"code": "BAD_USER_INPUT"}
