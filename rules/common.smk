# Functions shared by the rule files. `snakemake --lint` asks for functions and rules in separate
# files; the rule files that use these include this one.


def uis_results_path(source):
    """The instance results scored for an edge source ('none' = the base proposals themselves)."""
    if source == "none":
        return f"{R}/proposals/{PROPOSALS}/proposals.json"
    return f"{R}/bgp/{PROPOSALS}/{source}/instances.json"
