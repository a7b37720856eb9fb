"""Weight sharing: one CvT supernet trained once for a range of a space's members, whose slices are every member.

    from nas.supernet import MemberRange, supernet_for
    supernet = supernet_for(MemberRange(get_space("cvt13-nas")), dataset)   # trained once, then cached
    score = supernet.scorer(dataset)                                        # inherited accuracy, in seconds
    score(config); supernet.model.extract(config)                           # a plain cvt.CvT with its weights
"""
from ._elastic import ElasticCvT, covering_config
from ._train import CPU_RECIPE, GPU_RECIPE, RECIPES, MemberRange, Supernet, SupernetRecipe, cached_ranges, \
    choose_range, load_supernet, recipe_named, supernet_dir, supernet_for, train_supernet

__all__ = ["ElasticCvT", "covering_config", "SupernetRecipe", "CPU_RECIPE", "GPU_RECIPE", "RECIPES", "MemberRange",
           "Supernet", "train_supernet", "supernet_for", "supernet_dir", "cached_ranges", "choose_range",
           "recipe_named", "load_supernet"]
