"""A run as an RO-Crate 1.1 (the ``rocrate`` library): ready for a repository such as Zenodo.

The crate holds the notebook and the executed notebook (copied in), and describes, as one
``CreateAction`` (the Process Run Crate shape): the notebook as its instrument, the parameters
(``PropertyValue``) and the input datasets as its objects, the output datasets and the executed
notebook as its results, the job ids, the person who ran it as its agent, and the environment
(one ``SoftwareApplication`` per package). Each catalogue dataset is listed with every file,
its size and the checksums the catalogue recorded (md5 and adler32), so a reader can check the
files they download against it.

:func:`crate_metadata` is the builder (plain values in, a ``ROCrate`` out, no catalogue);
:func:`write_crate` writes it to a folder inside the user's home.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..core.publish import FileChecksum, InvalidPublish
from ..core.text import quote_prefix

#: the RO-Crate version written
RO_CRATE_VERSION = "1.1"
#: the terms a checksum is written with (absolute IRIs: RO-Crate 1.1's context has no checksum
#: term; schema.org's ``sha256`` came later): an md5 and an adler32 of the content
MD5 = "https://w3id.org/ro/terms/science-gateway#md5"
ADLER32 = "https://w3id.org/ro/terms/science-gateway#adler32"
_LICENSE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:/_+-]{0,199}$")
_TEXT_LIMIT = 2000


def _local_id(kind: str, value: str) -> str:
    return f"#{kind}/{value}"


def check_text(what: str, value, limit: int = _TEXT_LIMIT) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise InvalidPublish(f"{what} must be text of at most {limit} characters, not {quote_prefix(value)}")
    return value


def check_license(value) -> str:
    """An SPDX id (``CC-BY-4.0``) or a URL."""
    if not isinstance(value, str) or not _LICENSE_RE.fullmatch(value):
        raise InvalidPublish(f"license {quote_prefix(value)} must be an SPDX id such as CC-BY-4.0 or a URL")
    return value


def crate_metadata(*, title: str, description: str, license: str, user: dict, created: str,
                   notebook: tuple[Path, str] | None, executed_notebook: tuple[Path, str] | None,
                   parameters: dict, inputs: dict[str, list[FileChecksum] | None],
                   outputs: dict[str, list[FileChecksum] | None], jobs: list[str], environment: dict[str, str],
                   catalog_name: str):
    """The ``ROCrate`` of one run (``notebook``: ``(real path, path in the crate)``)."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.model.person import Person
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version=RO_CRATE_VERSION)
    crate.name = title
    crate.description = description
    crate.license = license
    crate.datePublished = created
    crate.root_dataset["license"] = license

    person = None
    if user.get("name"):
        props = {"name": user["name"]}
        if user.get("account"):
            props["identifier"] = f"{catalog_name} account {user['account']}"
        person = crate.add(Person(crate, _local_id("person", user["name"]), properties=props))
        crate.creator = person

    def file_entity(path_and_name, name):
        real, in_crate = path_and_name
        return crate.add_file(str(real), dest_path=in_crate, properties={
            "name": name, "encodingFormat": "application/x-ipynb+json",
        })

    def dataset_entity(did: str, files: list[FileChecksum] | None, role: str):
        parts = []
        for f in files or []:
            props = {"@type": "File", "name": f.name, "identifier": f.did}
            if f.bytes is not None:
                props["contentSize"] = str(f.bytes)
            if f.md5:
                props[MD5] = f.md5
            if f.adler32:
                props[ADLER32] = f.adler32
            parts.append(crate.add(ContextEntity(crate, _local_id("file", f.did), properties=props)))
        props = {"@type": "Dataset", "name": did, "identifier": did,
                 "description": f"{role} dataset {did} in {catalog_name}"}
        entity = crate.add(ContextEntity(crate, _local_id("dataset", did), properties=props))
        if parts:
            entity["hasPart"] = parts
        return entity

    notebook_entity = file_entity(notebook, "the notebook") if notebook else None
    executed_entity = file_entity(executed_notebook, "the executed notebook") if executed_notebook else None

    values = [
        crate.add(ContextEntity(crate, _local_id("parameter", name), properties={
            "@type": "PropertyValue", "name": name, "value": value if isinstance(value, str) else _json_text(value),
        }))
        for name, value in parameters.items()
    ]
    input_entities = [dataset_entity(did, files, "input") for did, files in inputs.items()]
    output_entities = [dataset_entity(did, files, "output") for did, files in outputs.items()]

    packages = [
        crate.add(ContextEntity(crate, _local_id("software", name), properties={
            "@type": "SoftwareApplication", "name": name, "softwareVersion": version,
        }))
        for name, version in environment.items()
    ]
    environment_entity = crate.add(ContextEntity(crate, "#environment", properties={
        "@type": "SoftwareApplication", "name": "the environment the notebook ran in",
    }))
    if packages:
        environment_entity["softwareRequirements"] = packages

    action_props = {"@type": "CreateAction", "name": f"run of {notebook[1] if notebook else 'a notebook'}", "endTime": created}
    if jobs:
        action_props["identifier"] = [f"job {j}" for j in jobs]
    action = crate.add(ContextEntity(crate, "#run", properties=action_props))
    action["instrument"] = [e for e in (notebook_entity, environment_entity) if e is not None]
    if input_entities or values:
        action["object"] = input_entities + values
    results = output_entities + ([executed_entity] if executed_entity else [])
    if results:
        action["result"] = results
    if person is not None:
        action["agent"] = person
    crate.root_dataset["mentions"] = [action]
    return crate


def _json_text(value) -> str:
    import json

    return json.dumps(value)


def write_crate(crate, dest: Path, as_zip: bool = False) -> Path:
    """Write ``crate`` to the folder ``dest`` (or ``dest`` as a .zip); ``dest`` must not exist."""
    if os.path.lexists(dest):
        raise InvalidPublish(f"{dest} exists already: choose a new folder for the RO-Crate", status=409)
    if as_zip:
        crate.write_zip(str(dest))
    else:
        crate.write(str(dest))
    return dest


async def export_run(catalog, root: str, dest, *, notebook=None, executed_notebook=None, parameters=None,
                     inputs=None, outputs=None, jobs=None, environment=None, user=None, title=None,
                     description=None, license="CC-BY-4.0", as_zip=False) -> dict:
    """Check every argument, look up the checksums of the input and output datasets in
    ``catalog``, write the crate to ``dest`` (a new folder, or .zip, inside ``root``) and return
    ``{"path": <relative to root>, "metadata": <ro-crate-metadata.json>}``.

    Raw user input is fine: paths stay inside ``root`` (no ``..``, no links out), dataset ids
    follow the DID grammar and the catalogue's allowed scopes, a missing dataset is a 404.
    """
    import json

    from ..core.catalog import NotFound
    from ..core.publish import (
        check_environment, check_inputs, check_jobs, check_parameters, check_user, current_environment,
        resolve_user_dest, resolve_user_file, utc_timestamp,
    )

    parameters, jobs = check_parameters(parameters), check_jobs(jobs)
    inputs, outputs = check_inputs(inputs), check_inputs(outputs)
    if not outputs and not inputs and not notebook:
        raise InvalidPublish("an RO-Crate needs something to describe: a notebook, inputs or outputs")
    user = check_user(user or {})
    license = check_license(license)
    description = check_text("description", description)
    title = check_text("title", title, 200)
    if not isinstance(as_zip, bool):
        raise InvalidPublish(f"zip must be true or false, not {quote_prefix(as_zip)}")
    environment = check_environment(environment) if environment else await catalog.run_blocking(current_environment)

    def paths():
        found = {}
        for key, path in (("notebook", notebook), ("executed_notebook", executed_notebook)):
            if path:
                real, relative = resolve_user_file(root, path, key.replace("_", " "))
                found[key] = (real, f"{key.replace('_', '-')}/{real.name}")
        return found, resolve_user_dest(root, dest, ".zip" if as_zip else "")

    found, (target, relative) = await catalog.run_blocking(paths)
    listed = {}
    for did in inputs + [d for d in outputs if d not in inputs]:
        files = await catalog.file_checksums(did)
        if files is None:
            raise NotFound(f"no dataset {quote_prefix(did)} in {catalog.display_name}")
        listed[did] = files
    crate = crate_metadata(
        title=title or f"Run of {found['notebook'][0].name if 'notebook' in found else 'a notebook'}",
        description=description or "A notebook run recorded by the science gateway: its notebook, parameters, inputs and outputs.",
        license=license, user=user, created=utc_timestamp(), notebook=found.get("notebook"),
        executed_notebook=found.get("executed_notebook"), parameters=parameters,
        inputs={d: listed[d] for d in inputs}, outputs={d: listed[d] for d in outputs}, jobs=jobs,
        environment=environment, catalog_name=catalog.display_name,
    )
    await catalog.run_blocking(write_crate, crate, target, as_zip)
    metadata = await catalog.run_blocking(lambda: json.loads(json.dumps(crate.metadata.generate())))
    return {"path": relative, "metadata": metadata}

