-- One database per service: no service reads another's database (DESIGN.md, "Services and what each owns").
-- The postgres image runs this once, as POSTGRES_USER, when its data volume is empty; each service's
-- web container then creates its tables with `labinov migrate SERVICE`.
-- Added a service later? Create its database by hand, or start from an empty volume (docker compose down -v).
-- tests/test_docker_compose.py checks that every LABINOV_<SERVICE>_DATABASE_URL names a database made here.
CREATE DATABASE registration OWNER labinov;
CREATE DATABASE notification OWNER labinov;
CREATE DATABASE evaluation OWNER labinov;
