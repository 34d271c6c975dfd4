# The root of the stand-in for hydra-optuna-sweeper's plugin folder: its adapted test file finds
# this folder by this file, as hydra.test_utils.chdir_plugin_root does. Not a package to install.
